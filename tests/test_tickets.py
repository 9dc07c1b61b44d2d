"""Support-ticket shaped data: many labels with a long tail, labels that look like codes or
paths ("001", "billing/refund"), new labels in a test file."""

from __future__ import annotations

import io

import numpy as np
import pytest
from rich.console import Console

from hanclf.cli import main as cli_main
from hanclf.config import class_weights_option
from hanclf.errors import UsageError
from hanclf.metrics import report
from hanclf.training import class_weights
from hanclf.vocab import Labels


def _printed_report(monkeypatch, labels: list[str], width: int) -> str:
    confusion = [[119 if i == j else 1 for j in range(len(labels))] for i in range(len(labels))]
    out = Console(file=io.StringIO(), width=width)
    monkeypatch.setattr(cli_main, "stdout", out)
    result = report(np.array(confusion), labels) | {"data": "tickets.csv"}
    cli_main._print_report(result)
    return out.file.getvalue()


def test_confusion_matrix_too_wide_for_the_terminal_is_not_mangled(monkeypatch):
    # 40 ticket categories: rich squeezed the matrix into 80 columns, counts cut to "1…" or
    # blanked and labels lost; a matrix that fits is printed whole.
    labels = ["001", "billing/refund", "account access"] + [f"cat{i:02d}" for i in range(37)]
    printed = _printed_report(monkeypatch, labels, width=80)
    line = printed.splitlines()[-1]
    assert line.startswith("confusion matrix: ") and "80 here" in line and "-o saves it" in line
    needed = int(line.split()[2])
    assert needed > 80 and f"COLUMNS={needed}" in line
    assert "…" not in printed and "billing/refund" in printed  # the per-class table, whole
    wide = _printed_report(monkeypatch, labels, width=needed)
    assert "…" not in wide and "COLUMNS=" not in wide
    assert wide.count(" 119 ") == 40 and "true \\ predicted" in wide
    small = _printed_report(monkeypatch, labels[:3], width=80)
    assert small.count(" 119 ") == 3 and "COLUMNS=" not in small


def test_class_weights_yaml_reading_a_code_as_octal_says_so(tmp_path):
    # Ticket category codes with leading zeros: YAML 1.1 reads `007: 4` as {7: 4} and `010: 2`
    # as {8: 2}; the error named label '7', which no one wrote.
    labels = Labels(["001", "007", "010", "12", "billing/refund"])
    for written, read in (("007", "7"), ("010", "8")):
        path = tmp_path / "w.yaml"
        path.write_text(f"billing/refund: 0.5\n{written}: 4\n", encoding="utf-8")
        weights = class_weights_option(str(path))
        with pytest.raises(UsageError) as error:
            class_weights(weights, labels, [0, 1, 2, 3, 4], "tickets.csv")
        assert str(error.value).endswith(
            f"; YAML reads an unquoted {written} as the number {read}: write '{written}' in quotes")
    path.write_text("billing/refund: 0.5\n'007': 4\n", encoding="utf-8")
    quoted = class_weights_option(str(path))
    assert class_weights(quoted, labels, [0, 1, 2, 3, 4], "tickets.csv") == [1, 4, 1, 1, 0.5]
    with pytest.raises(UsageError) as error:  # a label truly missing: no hint
        class_weights({"9": 2.0}, labels, [0, 1, 2, 3, 4], "tickets.csv")
    assert "YAML" not in str(error.value)
    with pytest.raises(UsageError) as error:  # a digit int() does not read: no hint, no traceback
        class_weights({"\u00b2": 2.0}, labels, [0, 1, 2, 3, 4], "tickets.csv")
    assert "YAML" not in str(error.value)


def test_confusion_matrix_whose_labels_wrap_to_fit_is_printed(monkeypatch):
    # Five labels of two words (SST-5) need 84 columns unwrapped; at 80 rich wraps "very
    # negative" and "true \ predicted" on two lines and cuts nothing: printed as before.
    labels = ["very negative", "negative", "neutral", "positive", "very positive"]
    printed = _printed_report(monkeypatch, labels, width=80)
    assert "COLUMNS=" not in printed and "…" not in printed
    assert printed.count(" 119 ") == 5 and "predicted" in printed
