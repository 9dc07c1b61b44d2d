"""Multi-label end to end on the shipped multi-label sample set (aspects a review judges, one
planted sentence each): train, thresholds, predict, evaluate, explain, and label-set inputs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn import metrics as sk
from sklearn.preprocessing import MultiLabelBinarizer
from typer.testing import CliRunner

from hanclf.cli.main import app
from hanclf.config import load_config
from hanclf.metrics import THRESHOLD_GRID
from hanclf.predict import Predictor
from hanclf.training import train
from tests.conftest import SAMPLE_DATA

pytestmark = pytest.mark.slow
TRAIN, TEST = SAMPLE_DATA / "multilabel_train.csv", SAMPLE_DATA / "multilabel_test.parquet"
ASPECTS = ["ambience", "food", "price", "service"]
SMALL = {
    "model.embed_dim": 32, "model.word_hidden": 16, "model.sent_hidden": 16,
    "model.word_att_dim": 16, "model.sent_att_dim": 16, "train.lr": 0.02,
    "train.max_epochs": 20, "train.patience": 5, "train.accelerator": "cpu",
    "data.label_column": "labels", "data.multi_label": True,
}


def invoke(*args: str | Path) -> str:
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("multilabel") / "model"
    train(TRAIN, out, load_config(None, SMALL), progress=False)
    return out


def test_labels_and_thresholds_are_saved(model):
    saved = json.loads((model / "labels.json").read_text())
    assert saved["labels"] == ASPECTS and saved["multi_label"] is True
    assert len(saved["thresholds"]) == 4
    assert all(np.isclose(THRESHOLD_GRID, t).any() for t in saved["thresholds"])
    metrics = json.loads((model / "metrics.json").read_text())["valid"]
    assert metrics["multi_label"] and metrics["micro_f1"] >= 0.9


def test_evaluate_on_the_held_out_set(model, tmp_path):
    out = tmp_path / "metrics.json"
    printed = invoke("evaluate", model, TEST, "-o", out)
    result = json.loads(out.read_text())
    assert result["support"] == 100
    # Measured over training seeds 42, 1, 2, 3: micro-F1 0.935-0.991, macro-F1 0.937-0.992,
    # subset accuracy 0.79-0.97 (all four labels right; guessing gets about 1/16).
    assert result["micro_f1"] >= 0.9 and result["macro_f1"] >= 0.9 and result["subset_accuracy"] >= 0.75
    truth = pd.read_parquet(TEST)["labels"]
    assert {k: v["support"] for k, v in result["per_class"].items()} == {
        a: int(sum(a in labels for labels in truth)) for a in ASPECTS
    }
    assert "subset_accuracy" in printed and "confusion" not in printed
    assert f"{result['micro_f1']:.4f}" in printed



def test_evaluate_scores_predictions_made_at_another_threshold_and_separator(model, tmp_path):
    # evaluate --threshold T scores exactly what predict --threshold T wrote.
    invoke("predict", model, TEST, "-o", tmp_path / "pred.parquet", "--threshold", "0.05")
    predicted = pd.read_parquet(tmp_path / "pred.parquet")["pred_labels"].map(set)
    truth = pd.read_parquet(TEST)["labels"].map(set)
    tp = sum(len(p & t) for p, t in zip(predicted, truth))
    fp = sum(len(p - t) for p, t in zip(predicted, truth))
    fn = sum(len(t - p) for p, t in zip(predicted, truth))
    piped = tmp_path / "piped.csv"  # the same labels, joined by '|' in one string
    pd.DataFrame({"text": pd.read_parquet(TEST)["text"], "labels": truth.map(lambda t: "|".join(sorted(t)))}).to_csv(piped, index=False)
    for data, flags in ((TEST, []), (piped, ["--label-separator", "|"])):
        invoke("evaluate", model, data, "--threshold", "0.05", "-o", tmp_path / "m.json", "--force", *flags)
        result = json.loads((tmp_path / "m.json").read_text())
        assert result["micro_f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
        assert set(result["thresholds"].values()) == {0.05}
        assert result["subset_accuracy"] == pytest.approx(np.mean([p == t for p, t in zip(predicted, truth)]))
    tuned = json.loads(invoke("evaluate", model, TEST, "-o", tmp_path / "t.json") and (tmp_path / "t.json").read_text())
    assert tuned["micro_f1"] != result["micro_f1"]  # 0.05 lets more labels through than the tuned ones

def test_evaluate_scores_labels_the_model_never_saw_as_scikit_learn_does(model, tmp_path):
    # scikit-learn's multi-label metrics over the labels of truth and prediction alike: a label
    # the model cannot output is a false negative wherever a document has it; such a document
    # is never an exact match, and the label is one more column of the Hamming loss.
    frame = pd.read_parquet(TEST)
    frame["labels"] = [list(t) + (["parking"] if i % 4 == 0 else []) + (["wifi"] if i % 10 == 3 else [])
                       for i, t in enumerate(frame["labels"])]
    data = tmp_path / "new.parquet"
    frame.to_parquet(data)
    predictor = Predictor(model, device="cpu")
    chosen = predictor.labels.predicted(predictor.predict_proba(frame["text"].tolist()))
    predicted = [[name for name, on in zip(ASPECTS, row) if on] for row in chosen]
    out = tmp_path / "m.json"
    run = CliRunner().invoke(app, ["evaluate", str(model), str(data), "-o", str(out), "-q"])
    assert run.exit_code == 0, run.output
    result = json.loads(out.read_text())
    assert result["labels"] == [*ASPECTS, "parking", "wifi"]
    binarizer = MultiLabelBinarizer(classes=result["labels"])
    truth, guess = binarizer.fit_transform(frame["labels"]), binarizer.transform(predicted)
    assert result["micro_f1"] == pytest.approx(sk.f1_score(truth, guess, average="micro", zero_division=0))
    assert result["macro_f1"] == pytest.approx(sk.f1_score(truth, guess, average="macro", zero_division=0))
    assert result["micro_recall"] == pytest.approx(sk.recall_score(truth, guess, average="micro", zero_division=0))
    assert result["subset_accuracy"] == pytest.approx(sk.accuracy_score(truth, guess))
    assert result["hamming_loss"] == pytest.approx(sk.hamming_loss(truth, guess))
    precision, recall, f1, support = sk.precision_recall_fscore_support(truth, guess, zero_division=0)
    for i, label in enumerate(result["labels"]):
        assert result["per_class"][label] == pytest.approx(
            {"precision": precision[i], "recall": recall[i], "f1": f1[i], "support": support[i]}), label
    assert result["per_class"]["parking"]["support"] == 25 and set(result["thresholds"]) == set(ASPECTS)
    assert run.stderr.splitlines() == [
        f"warning: {data} column 'labels': 35 of 100 rows have a label the model was not trained on "
        "('parking', 'wifi'); each such label counted as missed (a false negative), as scikit-learn "
        "counts them; take those labels out of the data to score only the labels the model knows"
    ]
    assert re.search(r"parking .* 25 .* - ", run.stdout)  # no threshold: never predicted
    # Sets joined by another separator than the model's read as labels it does not know: said.
    piped = tmp_path / "piped.csv"
    frame.head(5).assign(labels=frame["labels"].head(5).map("|".join)).to_csv(piped, index=False)
    run = CliRunner().invoke(app, ["evaluate", str(model), str(piped), "-q"])
    assert run.exit_code == 0 and run.stderr.count("\n") == 1, run.output
    assert run.stderr.rstrip().endswith("; sets of labels joined by a separator not read as one? "
                                        "--label-separator names it")


def test_predict_writes_label_sets_at_the_tuned_thresholds(model, tmp_path):
    out = tmp_path / "pred.parquet"
    invoke("predict", model, TEST, "-o", out, "--id-column", "id", "--top-k", "-1", "--device", "cpu")
    pred = pq.read_table(out)
    assert pred.schema.field("pred_labels").type == pa.list_(pa.string())
    assert pred.schema.field("pred_probs").type == pa.list_(pa.float32())
    assert "pred_label" not in pred.column_names
    rows = pred.to_pylist()
    predictor = Predictor(model, device="cpu")
    probs = predictor.predict_proba(pd.read_parquet(TEST)["text"].tolist())
    thresholds = predictor.labels.thresholds
    for row, p in zip(rows, probs):
        expected = [a for a in np.array(ASPECTS)[np.argsort(-p, kind="stable")] if p[ASPECTS.index(a)] >= thresholds[ASPECTS.index(a)]]
        assert row["pred_labels"] == expected
        assert row["pred_probs"] == pytest.approx(sorted(row["pred_probs"], reverse=True))
        assert sorted(row["top_labels"]) == ASPECTS  # -1: every label, with its own probability
        assert row["top_probs"] == pytest.approx(sorted(p, reverse=True), abs=1e-6)
    truth = pd.read_parquet(TEST)["labels"].map(sorted)
    exact = np.mean([sorted(r["pred_labels"]) == list(t) for r, t in zip(rows, truth)])
    assert exact >= 0.75  # the subset accuracy measured above
    assert any(r["pred_labels"] == [] for r in rows) or not any(len(t) == 0 for t in truth)


def test_threshold_flag_overrides_the_tuned_thresholds(model, tmp_path):
    low, high = tmp_path / "low.parquet", tmp_path / "high.parquet"
    invoke("predict", model, TEST, "-o", low, "--threshold", "0.01")
    invoke("predict", model, TEST, "-o", high, "--threshold", "0.99")
    n_low = sum(map(len, pd.read_parquet(low)["pred_labels"]))
    n_high = sum(map(len, pd.read_parquet(high)["pred_labels"]))
    assert n_low > n_high
    for labels, probs in zip(pd.read_parquet(high)["pred_labels"], pd.read_parquet(high)["pred_probs"]):
        assert len(labels) == len(probs) and all(p >= 0.99 for p in probs)


def test_predictor_schema_is_known_before_any_data(model):
    predictor = Predictor(model, device="cpu")
    schema = predictor.output_schema(top_k=2)
    assert schema.names == ["pred_labels", "pred_probs", "empty_text", "top_labels", "top_probs"]
    table = predictor.predict_table(["The room felt cosy.", None], top_k=2)
    assert table.schema == schema
    assert table.column("empty_text").to_pylist() == [False, True]


def test_top_k_past_a_single_label_still_lists_it(model):
    # A one-tag model asked for --top-k 3 dropped the top columns (and --threshold) silently.
    from hanclf.vocab import Labels

    predictor = Predictor(model, device="cpu")
    predictor.labels = Labels(["only"], multi_label=True)
    table = predictor._table(np.array([[0.7], [0.1]]), np.array([False, False]), top_k=3, threshold=0.2)
    assert table.column_names == ["pred_labels", "pred_probs", "empty_text", "top_labels", "top_probs"]
    assert table.column("top_labels").to_pylist() == [["only"], []]


def test_explain_writes_the_predicted_set_and_the_true_set(model, tmp_path):
    out, html = tmp_path / "sentences.csv", tmp_path / "report.html"
    invoke("explain", model, TEST, "-o", out, "--level", "sentence", "--id-column", "id",
           "--limit", "30", "--html", html)
    rows = pd.read_csv(out, keep_default_na=False)
    first = rows.groupby("doc_id").first()
    truth = pd.read_parquet(TEST).head(30).set_index("id")["labels"].map(lambda t: ",".join(sorted(t)))
    assert first["true_label"].to_dict() == truth.to_dict()
    assert (first["pred_label"] == first["true_label"]).mean() >= 0.8
    page = html.read_text()
    assert "misclassified" in page and 'class="doc p' in page


def per_doc(attention_csv: Path, column: str) -> pd.Series:
    """One value of `column` per document of explain's CSV (each row of a document holds it)."""
    return pd.read_csv(attention_csv, keep_default_na=False).groupby("doc_id")[column].first()


def test_explain_threshold_predicts_what_predict_threshold_does(model, tmp_path):
    # explain's predicted sets followed the tuned thresholds only, so its report disagreed with
    # predictions made at another --threshold.
    invoke("predict", model, TEST, "-o", tmp_path / "pred.parquet", "--id-column", "id", "--threshold", "0.05")
    predicted = pd.read_parquet(tmp_path / "pred.parquet").set_index("id")["pred_labels"]
    invoke("explain", model, TEST, "-o", tmp_path / "s.csv", "--level", "sentence", "--id-column", "id",
           "--threshold", "0.05")
    explained = per_doc(tmp_path / "s.csv", "pred_label")
    expected = predicted.map(lambda labels: ",".join(sorted(labels, key=ASPECTS.index)))
    assert explained.to_dict() == expected.to_dict()
    invoke("explain", model, TEST, "-o", tmp_path / "t.csv", "--level", "sentence", "--id-column", "id")
    tuned = per_doc(tmp_path / "t.csv", "pred_label")
    assert tuned.str.count(",").sum() < explained.str.count(",").sum()  # 0.05 lets more labels through


def test_explain_gives_the_predicted_labels_probability_as_predict_does(model, tmp_path):
    # explain's pred_prob was the highest probability of any label, predicted or not: beside
    # pred_label it read as that label's, and differed from predict's and the HTML report's.
    invoke("predict", model, TEST, "-o", tmp_path / "pred.parquet", "--id-column", "id", "--threshold", "0.5")
    predicted = pd.read_parquet(tmp_path / "pred.parquet").set_index("id")["pred_probs"]
    invoke("explain", model, TEST, "-o", tmp_path / "s.csv", "--level", "sentence", "--id-column", "id",
           "--threshold", "0.5")
    explained = per_doc(tmp_path / "s.csv", "pred_prob")
    expected = predicted.map(lambda probs: f"{max(probs):.6f}" if len(probs) else "")
    assert (expected == "").any() and (expected != "").any()
    assert explained.astype(str).to_dict() == expected.to_dict()


def test_explain_reads_true_sets_joined_by_another_separator(model, tmp_path):
    # evaluate had --label-separator; explain refused the same file as holding unknown labels.
    frame = pd.read_parquet(TEST).head(10)
    piped = tmp_path / "piped.csv"
    frame.assign(labels=frame["labels"].map(lambda t: "|".join(sorted(t, reverse=True)))).to_csv(piped, index=False)
    invoke("explain", model, piped, "-o", tmp_path / "s.csv", "--level", "sentence", "--id-column", "id",
           "--label-separator", "|")
    truth = per_doc(tmp_path / "s.csv", "true_label")
    assert truth.to_dict() == frame.set_index("id")["labels"].map(lambda t: ",".join(sorted(t))).to_dict()


def test_evaluate_and_explain_name_a_row_whose_labels_are_a_list_within_a_list(model, tmp_path):
    nested = tmp_path / "nested.jsonl"
    nested.write_text('{"text": "Good food.", "labels": ["food"]}\n{"text": "Slow.", "labels": [["service", "food"]]}\n')
    for command in (["evaluate", model, nested], ["explain", model, nested, "-o", tmp_path / "a.csv"]):
        result = CliRunner().invoke(app, [str(a) for a in command])
        assert result.exit_code == 2, result.output
        assert "nested.jsonl: row 2 (iloc 1) holds a list within a list" in result.output


def test_list_column_training_data_and_labels_unknown_to_train(tmp_path):
    frame = pd.read_csv(TRAIN, keep_default_na=False)
    frame["labels"] = frame["labels"].map(lambda s: s.split(",") if s else [])
    data = tmp_path / "train.parquet"
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), data)
    assert pq.read_schema(data).field("labels").type == pa.list_(pa.string())
    out = tmp_path / "model"
    invoke("train", data, "-o", out, "--multi-label", "--label-column", "labels", "--max-epochs", "1",
           "--set", "model.embed_dim=8", "--set", "model.word_hidden=4", "--set", "model.sent_hidden=4")
    assert json.loads((out / "labels.json").read_text())["labels"] == ASPECTS

    valid = tmp_path / "valid.csv"
    pd.DataFrame({"text": ["The room felt cosy."], "labels": ["ambience,parking"]}).to_csv(valid, index=False)
    result = CliRunner().invoke(app, ["train", str(data), "--valid", str(valid), "-o", str(tmp_path / "m2"),
                                      "--multi-label", "--label-column", "labels"])
    assert result.exit_code == 2
    assert "valid.csv" in result.output and "'parking'" in result.output
    assert not (tmp_path / "m2").exists()


def test_a_label_holding_the_separator_is_refused_where_labels_are_joined(model, tmp_path):
    # A list column is not split on the separator, so a label in it could hold one; explain
    # joined a document's labels with it, and 'food, drinks,price' read as three labels.
    frame = pd.read_csv(TRAIN, keep_default_na=False)
    frame["labels"] = [[{"food": "food, drinks"}.get(t, t) for t in s.split(",") if t] for s in frame["labels"]]
    data = tmp_path / "train.parquet"
    frame.to_parquet(data)
    result = CliRunner().invoke(app, ["train", str(data), "-o", str(tmp_path / "m"), "--multi-label",
                                      "--label-column", "labels", "--max-epochs", "1", "-q"])
    assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.output
    first = next(i for i, (split, tags) in enumerate(zip(frame["split"], frame["labels"]))
                 if split == "train" and "food, drinks" in tags)
    assert result.stderr == (f"error: {data} (split=train): row {first + 1} (iloc {first}) has label "
                             "'food, drinks' in column 'labels', which holds the label separator ',', which joins a document's labels in explain's "
                             "output; train with --label-separator set to a character that no label "
                             "holds, or rename the label\n")
    assert not (tmp_path / "m").exists()
    test = pd.read_parquet(TEST).head(3)
    test["labels"] = [["food, drinks"], ["price"], []]
    test.to_parquet(tmp_path / "test.parquet")
    result = CliRunner().invoke(app, ["explain", str(model), str(tmp_path / "test.parquet"),
                                      "-o", str(tmp_path / "s.csv"), "-q"])
    assert result.exit_code == 2 and "row 1 (iloc 0) has label 'food, drinks' in column 'labels'" in result.stderr
    assert "--label-column ''" in result.stderr and not (tmp_path / "s.csv").exists()


def test_report_counts_an_empty_true_set_as_a_true_label(model, tmp_path):
    # "No label applies" is a true label set like any other: the report took it for an unknown
    # one, so a document tagged with nothing but predicted "food" was never marked misclassified
    # (its count disagreed with the CSV's on the same run).
    out, html = tmp_path / "s.csv", tmp_path / "report.html"
    invoke("explain", model, TEST, "-o", out, "--level", "sentence", "--id-column", "id",
           "--threshold", "0.01", "--html", html)
    first = pd.read_csv(out, keep_default_na=False).groupby("doc_id").first()
    empty = first.index[first["true_label"] == ""]
    assert len(empty) == 4 and (first.loc[empty, "pred_label"] != "").all()
    wrong = int((first["pred_label"] != first["true_label"]).sum())
    page = html.read_text()
    assert f'<b id="n-wrong">{wrong}</b> misclassified of 100 with a true label' in page
    for doc_id in empty:
        assert re.search(f'<article class="doc[^"]* wrong known"><header><span class="id">{doc_id}</span>', page)


def test_a_probability_a_hair_below_its_cut_is_not_predicted_anywhere(model):
    """predict, explain and evaluate choose labels alike (Labels.predicted, in float64): a
    probability just below its cut, though equal to it in float32, passes none of them.
    Compared in float32, explain and predict --threshold chose such a label, and predict
    with the tuned thresholds, evaluate and the tuning did not."""
    predictor = Predictor(model, device="cpu")
    text = pd.read_parquet(TEST)["text"].iloc[0]
    p = predictor.predict_proba([text])[0]
    j = int(np.argmax(p))
    cut = float(np.nextafter(np.float64(p[j]), 1.0))
    assert cut > float(p[j]) and np.float32(cut) == p[j]  # above p, yet p in float32
    name = predictor.labels.names[j]
    assert j not in predictor.labels.chosen(p, threshold=cut)  # explain --threshold
    given = predictor.predict_table([text], top_k=2, threshold=cut).to_pylist()[0]
    assert name not in given["pred_labels"] and name not in given["top_labels"]
    predictor.labels.thresholds[j] = cut  # as if tuned there
    assert j not in predictor.labels.chosen(p)  # explain
    assert name not in predictor.predict_table([text]).to_pylist()[0]["pred_labels"]  # predict
    assert not predictor.labels.predicted(p[np.newaxis])[0, j]  # evaluate, validation
    predictor.labels.thresholds[j] = float(p[j])  # at the cut: chosen everywhere
    assert j in predictor.labels.chosen(p) and name in predictor.predict_table([text]).to_pylist()[0]["pred_labels"]
