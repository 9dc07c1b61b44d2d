"""Commands that never train must not pay for importing Lightning (about 2 s of every start-up,
and once more in every worker process of predict)."""

from __future__ import annotations

import subprocess
import sys


def test_predict_explain_evaluate_do_not_import_lightning():
    code = (
        "import sys, hanclf.predict, hanclf.explain, hanclf.evaluate, hanclf.faithfulness\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('pytorch_lightning', 'lightning_fabric')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"

