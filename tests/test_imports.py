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



def test_the_library_functions_come_from_the_package_itself():
    # `from hanclf import train` is the function (a module of that name would shadow it), and
    # importing the package alone loads no torch.
    code = (
        "import sys, inspect, hanclf\n"
        "print('torch' in sys.modules)\n"
        "from hanclf import Predictor, evaluate_file, explain_file, load_config, predict_file, train\n"
        "import hanclf.predict, hanclf.training\n"
        "print([n for n in hanclf.__all__[:-1] if not callable(getattr(hanclf, n)) or inspect.ismodule(getattr(hanclf, n))])\n"
        "print(hanclf.train is hanclf.training.train, train.__module__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split("\n")[:3] == ["False", "[]", "True hanclf.training"]
