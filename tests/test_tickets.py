"""Support-ticket shaped data: many labels with a long tail, labels that look like codes or
paths ("001", "billing/refund"), new labels in a test file."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest
from rich.console import Console
from sklearn import metrics as sk
from typer.testing import CliRunner

from hanclf.cli import main as cli_main
from hanclf.config import class_weights_option, load_config, parse_override
from hanclf.errors import UsageError
from hanclf.evaluate import evaluate_file
from hanclf.metrics import report
from hanclf.predict import Predictor
from hanclf.training import class_weights
from hanclf.vocab import Labels


def _printed_report(monkeypatch, labels: list[str], width: int) -> str:
    confusion = [[119 if i == j else 1 for j in range(len(labels))] for i in range(len(labels))]
    out = Console(file=io.StringIO(), width=width)
    monkeypatch.setattr(cli_main, "stdout", out)
    result = report(np.array(confusion), labels) | {"data": "tickets.csv", "calibration_error": 0.01}
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


def test_class_weights_yaml_keys_are_the_labels_as_written(tmp_path):
    # Ticket category codes with leading zeros: YAML 1.1 read an unquoted `010: 4` as {8: 4},
    # and where the data has a label 8 as well its weight went there without a word.
    labels = Labels(["007", "010", "8", "billing/refund"])
    path = tmp_path / "w.yaml"
    path.write_text("billing/refund: 0.5\n010: 4\n007: 3\n", encoding="utf-8")
    weights = class_weights_option(str(path))
    assert class_weights(weights, labels, [0, 1, 2, 3], "tickets.csv") == [3, 4, 1, 0.5]
    # Other keys YAML 1.1 reads otherwise than written (hex, base 60, _, a boolean); a merge key
    # still merges.
    path.write_text("0x1A: 2\n1:30: 2\n1_000: 2\n4.0: 2\nyes: 2\n<<: {'007': 3}\n", encoding="utf-8")
    assert class_weights_option(str(path)) == {
        "0x1A": 2.0, "1:30": 2.0, "1_000": 2.0, "4": 2.0, "yes": 2.0, "007": 3.0}
    config = tmp_path / "c.yaml"
    config.write_text("train:\n  class_weights:\n    010: 4\n", encoding="utf-8")
    assert load_config(str(config)).train.class_weights == {"010": 4.0}
    assert parse_override("train.class_weights={010: 4}") == ("train.class_weights", {"010": 4})
    with pytest.raises(UsageError, match=r"label '010' is not among the labels of tickets.csv \(8, 9\)"):
        class_weights({"010": 4.0}, Labels(["8", "9"]), [0, 1], "tickets.csv")


def test_confusion_matrix_whose_labels_wrap_to_fit_is_printed(monkeypatch):
    # Five labels of two words (SST-5) need 84 columns unwrapped; at 80 rich wraps "very
    # negative" and "true \ predicted" on two lines and cuts nothing: printed as before.
    labels = ["very negative", "negative", "neutral", "positive", "very positive"]
    printed = _printed_report(monkeypatch, labels, width=80)
    assert "COLUMNS=" not in printed and "…" not in printed
    assert printed.count(" 119 ") == 5 and "predicted" in printed


NEW_CATEGORIES = ["returns", "007", "loyalty", "gift cards", "billing/refund", "b2b", "api"]


@pytest.mark.slow
def test_evaluate_scores_labels_the_model_never_saw_as_scikit_learn_does(model_dir, data_dir, tmp_path):
    # A test month with new ticket categories stopped evaluate at the first such row: no figure
    # at all. scikit-learn counts such a row as misclassified (its label is in y_true, never in
    # y_pred), keeps the label in the per-class report, and so does evaluate.
    frame = pd.read_parquet(data_dir / "test.parquet")
    frame.loc[:13, "label"] = [NEW_CATEGORIES[i % 7] for i in range(14)]
    data = tmp_path / "month.csv"
    frame.to_csv(data, index=False)
    predictor = Predictor(model_dir, device="cpu")
    predicted = [predictor.labels.names[i] for i in predictor.predict_proba(frame["text"].tolist()).argmax(1)]
    truth = frame["label"].tolist()

    lines: list[str] = []
    result = evaluate_file(model_dir, data, device="cpu", progress=False, log=lines.append)
    unknown = ["007", "api", "b2b", "billing/refund", "gift cards", "loyalty", "returns"]
    assert result["labels"] == predictor.labels.names + unknown
    assert result["support"] == 60
    assert result["accuracy"] == pytest.approx(sk.accuracy_score(truth, predicted))
    assert result["macro_f1"] == pytest.approx(sk.f1_score(truth, predicted, average="macro", zero_division=0))
    assert result["weighted_f1"] == pytest.approx(
        sk.f1_score(truth, predicted, average="weighted", zero_division=0))
    precision, recall, f1, support = sk.precision_recall_fscore_support(
        truth, predicted, labels=result["labels"], zero_division=0)
    for i, label in enumerate(result["labels"]):
        assert result["per_class"][label] == pytest.approx(
            {"precision": precision[i], "recall": recall[i], "f1": f1[i], "support": support[i]}), label
    assert result["per_class"]["007"]["support"] == 2 and result["per_class"]["api"]["recall"] == 0
    assert result["confusion_matrix"] == sk.confusion_matrix(truth, predicted, labels=result["labels"]).tolist()
    assert lines == [
        f"warning: {data} column 'label': 14 of 60 rows have a label the model was not trained on "
        "('007', 'api', 'b2b', 'billing/refund', 'gift cards' and 2 more); counted as misclassified, "
        "as scikit-learn counts them; filter those rows out of the data to score only the labels "
        "the model knows"
    ]

    out = tmp_path / "metrics.json"
    run = CliRunner().invoke(cli_main.app, ["evaluate", str(model_dir), str(data), "-o", str(out), "-q",
                                              "--device", "cpu"])  # as `result`, computed on the CPU
    assert run.exit_code == 0, run.output
    assert run.stderr.splitlines() == lines  # one line, however wide the terminal
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    assert "billing/refund" in run.stdout and "confusion matrix" in run.stdout


@pytest.mark.slow
def test_explain_shows_a_label_the_model_never_saw_as_the_true_label(model_dir, data_dir, tmp_path):
    # explain refused the month's file at its first new category, as evaluate did; where the
    # model looked for the label it gave instead is what a reader of such a ticket wants.
    frame = pd.read_parquet(data_dir / "test.parquet").head(6)
    frame.loc[:1, "label"] = ["loyalty", "007"]
    data, out, html = tmp_path / "month.csv", tmp_path / "s.csv", tmp_path / "r.html"
    frame.to_csv(data, index=False)
    run = CliRunner().invoke(cli_main.app, ["explain", str(model_dir), str(data), "-o", str(out), "--html",
                                            str(html), "--level", "sentence", "--id-column", "id", "-q"])
    assert run.exit_code == 0, run.output
    truth = pd.read_csv(out, dtype=str, keep_default_na=False).groupby("doc_id")["true_label"].first()
    assert truth.to_dict() == frame.set_index("id")["label"].to_dict()
    documents = html.read_text().split("<article")[1:]
    for doc_id, label in (("d0000", "loyalty"), ("d0001", "007")):
        (doc,) = [d for d in documents if f">{doc_id}<" in d]
        assert f"true <b>{label}</b>" in doc and "misclassified" in doc
