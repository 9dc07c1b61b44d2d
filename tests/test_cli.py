"""The four commands end to end, checked on the values they write."""

from __future__ import annotations

import csv
import json
import math
import re
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import typer
from typer.testing import CliRunner

from hanclf.artifact import load
from hanclf.cli.main import _run, app
from hanclf.config import load_config
from hanclf.errors import UsageError
from hanclf.evaluate import evaluate_file
from hanclf.explain import explain_file
from hanclf.faithfulness import faithfulness_file
from hanclf.predict import Predictor, predict_file
from hanclf.training import train
from hanclf.tokenize import tokenize
from tests.conftest import CUES, FILLER, SAMPLE_DATA, make_reviews, words_past_the_caps

runner = CliRunner()


def invoke(*args: str | Path) -> str:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


def test_version_and_module_entry_point():
    out = subprocess.run([sys.executable, "-m", "hanclf", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "hanclf 0.1.0"


def test_a_tilde_path_is_the_home_folder_and_an_empty_path_is_refused(model_dir, data_dir, tmp_path, monkeypatch):
    # The shell leaves --output=~/p.parquet and "~/p" as written: predict failed with a
    # traceback (pyarrow wrote to $HOME, hanclf's temporary folder was under ./~), and
    # evaluate made a folder named ~ in the current one.
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir(), work.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    invoke("predict", model_dir, data_dir / "test.parquet", "--output=~/p.parquet", "-q")
    invoke("evaluate", model_dir, data_dir / "test.parquet", "--output=~/m.json")
    assert sorted(p.name for p in home.iterdir()) == ["m.json", "p.parquet"] and not any(work.iterdir())
    (home / "m").symlink_to(model_dir)  # the Python API expands ~ too, as pandas does
    assert Predictor("~/m", device="cpu").model_dir == home / "m"
    # An unset shell variable: "" read every Parquet file under the current folder.
    result = runner.invoke(app, ["predict", str(model_dir), "", "-o", str(tmp_path / "e.parquet")])
    assert result.exit_code == 2 and "an empty path" in result.output
    with pytest.raises(UsageError, match="input_path: an empty path"):
        predict_file(model_dir, "", tmp_path / "e.parquet")
    # A name starting with ~ but no ~/ (Office's ~$x.csv) is a file: Path.expanduser raised.
    (work / "~draft.parquet").write_bytes((data_dir / "test.parquet").read_bytes())
    invoke("predict", model_dir, "~draft.parquet", "-o", "~draft-out.parquet", "-q")
    assert predict_file(model_dir, "~draft.parquet", "~draft-again.parquet")["rows"] == pq.read_metadata(data_dir / "test.parquet").num_rows


def test_a_report_piped_into_a_reader_that_stops_exits_as_sigpipe(model_dir, data_dir):
    # rich's default was exit 1, a run-time failure to a retry policy.
    script = f'"{sys.executable}" -m hanclf evaluate "{model_dir}" "{data_dir / "test.parquet"}" | true; echo "${{PIPESTATUS[0]}}"'
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True)
    assert out.stdout.strip() == "141" and out.stderr == "", out


def test_trained_model_learns_the_cue_sentences(model_dir):
    metrics = json.loads((model_dir / "metrics.json").read_text())
    assert metrics["valid"]["accuracy"] >= 0.9
    assert set(metrics["valid"]["labels"]) == {"mix", "neg", "pos"}
    assert 0 <= metrics["best_epoch"] < metrics["epochs_run"] <= 6
    epochs = metrics["epoch_seconds"]
    assert len(epochs) == metrics["epochs_run"] and min(epochs) > 0
    assert sum(epochs) < metrics["train_seconds"]  # which also holds reading and start-up
    assert (metrics["torch_version"], metrics["hanclf_version"]) == (torch.__version__, "0.1.0")
    history = pd.read_csv(model_dir / "history.csv")  # one row per epoch, every figure filled
    assert list(history.columns) == ["epoch", "step", "train_loss", "val_acc", "val_loss", "val_macro_f1"]
    assert history["epoch"].tolist() == list(range(metrics["epochs_run"]))
    assert not history[["train_loss", "val_loss", "val_acc", "val_macro_f1"]].isna().any().any()
    assert history["val_acc"].max() == pytest.approx(metrics["valid"]["accuracy"], abs=1e-6)
    assert history["train_loss"].iloc[-1] < history["train_loss"].iloc[0]  # epoch means fall


def test_train_logs_steps_where_no_bar_is_drawn(data_dir, tmp_path, monkeypatch):
    # A CPU epoch on real data takes up to an hour, with nothing in a batch job's log meanwhile.
    monkeypatch.setattr("hanclf.training.PROGRESS_LOG_SECONDS", 0.0)
    config = load_config(None, {"model.embed_dim": 8, "model.word_hidden": 4, "model.sent_hidden": 4,
                                "train.max_epochs": 2, "train.batch_size": 64, "train.accelerator": "cpu"})
    lines: list[str] = []
    train(data_dir / "train.csv", tmp_path / "m", config, progress=False, log=lines.append)
    steps = [line for line in lines if ": step " in line]
    # 216 training documents (240 less 10% valid) in batches of 64: 4 steps an epoch.
    assert [line.split(", loss ")[0] for line in steps] == [
        f"epoch {e}/2: step {s} of 4" for e in (1, 2) for s in (1, 2, 3, 4)]
    assert all(re.search(r", loss \d\.\d{4}, about \d+ s left in the epoch$", line) for line in steps)
    assert lines.index(steps[4]) > lines.index(next(line for line in lines if line.startswith("epoch 1/2: train loss")))
    lines.clear()
    train(data_dir / "train.csv", tmp_path / "n", config, progress=True, log=lines.append)
    assert not any(": step " in line for line in lines)  # the bar shows the steps


# -1, or as fastText's predict-prob, any k above the number of labels: every label.
@pytest.mark.parametrize("top_k", ["-1", "9"])
def test_predict_writes_ids_labels_and_probabilities(model_dir, data_dir, tmp_path, top_k):
    out = tmp_path / "pred.parquet"
    invoke("predict", model_dir, data_dir / "test.parquet", "-o", out, "--id-column", "id",
           "--keep-columns", "label", "--top-k", top_k)
    pred = pd.read_parquet(out)
    source = pd.read_parquet(data_dir / "test.parquet")
    assert list(pred.columns) == ["id", "label", "pred_label", "pred_prob", "empty_text",
                                  "top_labels", "top_probs"]
    assert pred["id"].tolist() == source["id"].tolist()
    assert (pred["pred_label"] == pred["label"]).mean() >= 0.9
    for labels, probs, top, prob in zip(pred["top_labels"], pred["top_probs"], pred["pred_label"], pred["pred_prob"]):
        assert sorted(labels) == ["mix", "neg", "pos"] and labels[0] == top
        assert math.isclose(sum(probs), 1.0, abs_tol=1e-5) and probs[0] == pytest.approx(prob)
        assert list(probs) == sorted(probs, reverse=True)
    meta = json.loads(pq.read_schema(out).metadata[b"hanclf"])
    assert meta["labels"] == ["mix", "neg", "pos"]


def test_predict_threshold_drops_unlikely_labels_and_row_id_without_id_column(model_dir, data_dir, tmp_path):
    out = tmp_path / "pred.parquet"
    invoke("predict", model_dir, data_dir / "train.csv", "-o", out, "--top-k", "3", "--threshold", "0.3",
           "--device", "cpu")  # compared with the CPU's probabilities below
    pred = pd.read_parquet(out)
    assert pred["row_id"].tolist() == list(range(240))
    predictor = Predictor(model_dir, device="cpu")
    probs = predictor.predict_proba(pd.read_csv(data_dir / "train.csv")["text"].tolist())
    for row, labels, kept in zip(probs, pred["top_labels"], pred["top_probs"]):
        expected = [i for i in np.argsort(-row) if row[i] >= 0.3]
        assert list(labels) == [predictor.labels.names[i] for i in expected]
        np.testing.assert_allclose(kept, row[expected], atol=1e-6)


def test_predict_tokenized_reads_an_empty_sentence_as_none(model_dir):
    # A sentence removed by emptying it (a leave-one-out check) crashed inside the GRU's packing.
    predictor = Predictor(model_dir, device="cpu")
    with_empty = predictor.predict_tokenized([[["great", "food"], []], [[], ["awful"]]])
    without = predictor.predict_tokenized([[["great", "food"]], [["awful"]]])
    np.testing.assert_allclose(with_empty, without, atol=1e-6)
    np.testing.assert_allclose(without, predictor.predict_proba(["great food", "awful"]), atol=1e-6)


@pytest.mark.parametrize("batch_size", [0, -1])
def test_predictor_refuses_a_batch_size_below_one(model_dir, batch_size):
    # 0 quietly became the default and -1 was accepted; the CLI's --batch-size needs >= 1.
    with pytest.raises(UsageError, match=f"batch_size {batch_size}: must be at least 1"):
        Predictor(model_dir, device="cpu", batch_size=batch_size)


def test_the_api_names_a_missing_model_dir_and_duplicate_text_columns(model_dir, tmp_path):
    # None reached the library as an AttributeError; two columns named 'text' were pandas'
    # "Duplicate column names found" or Arrow's KeyError.
    with pytest.raises(TypeError, match="model_dir: a path .* not NoneType"):
        Predictor(None)
    with pytest.raises(TypeError, match="model_dir: a path .* not NoneType"):
        predict_file(None, tmp_path / "in.parquet", tmp_path / "out.parquet")
    predictor = Predictor(model_dir, device="cpu")
    two = pd.DataFrame([["Great food.", "Awful."]], columns=["text", "text"])
    for batch in (two, pa.table([pa.array(["Great food."]), pa.array(["Awful."])], names=["text", "text"])):
        with pytest.raises(UsageError, match="the batch has 2 columns named 'text'"):
            predictor(batch)
    # Arrow's binary_view reads as text, as binary and large_binary do.
    viewed = pa.table({"text": pa.array(["Great food.", "Awful."]).cast(pa.binary_view())})
    assert predictor(viewed)["pred_label"].to_pylist() == predictor.predict_table(["Great food.", "Awful."])["pred_label"].to_pylist()


def test_save_load_predict_gives_the_same_probabilities(model_dir, data_dir):
    texts = pd.read_parquet(data_dir / "test.parquet")["text"].tolist()
    first = Predictor(model_dir, device="cpu").predict_proba(texts)
    again = Predictor(model_dir, device="cpu", batch_size=7).predict_proba(texts)
    np.testing.assert_allclose(first, again, atol=1e-6)
    few_slots = Predictor(model_dir, device="cpu")
    few_slots.max_batch_slots = 40  # batches of one to a few documents
    np.testing.assert_allclose(first, few_slots.predict_proba(texts), atol=1e-6)
    np.testing.assert_allclose(first.sum(1), 1.0, atol=1e-5)
    # the CPU defaults: batches of 64 and the word GRU's input gates looked up per vocabulary entry
    predictor = Predictor(model_dir, device="cpu")
    vocab_size = len(predictor.artifact.vocab)
    assert predictor.batch_size == 64
    assert predictor.model.word_encoder.input_gates is None  # built by the first forward pass
    np.testing.assert_allclose(first, predictor.predict_proba(texts), atol=1e-6)
    assert predictor.model.word_encoder.input_gates.shape == (2, vocab_size, 3 * predictor.model.config.word_hidden)



# A model trained before the tokenizer's rules changed: predict says so once, as a `warning:`
# line, not once more from each worker process that loads the model too.
def test_predict_warns_once_of_a_model_tokenized_by_other_rules(model_dir, data_dir, tmp_path):
    old_model = tmp_path / "old"
    shutil.copytree(model_dir, old_model)
    vocab = json.loads((old_model / "vocab.json").read_text())
    (old_model / "vocab.json").write_text(json.dumps({**vocab, "tokenizer": vocab["tokenizer"] + 1}))
    rows = pd.read_parquet(data_dir / "test.parquet")
    pd.concat([rows] * (2_100 // len(rows) + 1)).to_parquet(tmp_path / "in.parquet")  # workers start
    done = subprocess.run(
        [sys.executable, "-m", "hanclf", "predict", old_model, tmp_path / "in.parquet", "-o",
         tmp_path / "out.parquet", "--devices", "2", "--quiet"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    warned = [line for line in done.stderr.splitlines() if "tokenizer rules" in line]
    assert warned == [f"warning: {old_model}: trained with tokenizer rules v{vocab['tokenizer'] + 1}, "
                      f"this hanclf tokenizes with v{vocab['tokenizer']}: some words split "
                      "differently than in training, which can cost accuracy; retrain the model, "
                      "or predict with hanclf 0.1.0, which trained it"]
    assert ", 2 worker processes)" in done.stderr  # the path where each worker loads the model


# A batch job over daily partitions meets an empty one: its output is empty too, with the
# columns and types a non-empty input gives, so the partitions concatenate.
@pytest.mark.parametrize("devices", ["1", "2"])
def test_predict_on_an_input_without_rows_writes_an_empty_output(model_dir, data_dir, tmp_path, devices):
    source = pd.read_parquet(data_dir / "test.parquet")
    full, empty = tmp_path / "full.parquet", tmp_path / "empty.parquet"
    source.to_parquet(full)
    # The empty partition keeps the full one's column types: from pandas, before 3.0, an empty
    # object column would be written as type null.
    pq.write_table(pq.read_table(full).slice(0, 0), empty)
    for name, path in (("full", full), ("empty", empty)):  # text kept too: a column read twice
        output = invoke("predict", model_dir, path, "-o", tmp_path / f"pred-{name}.parquet",
                        "--id-column", "id", "--keep-columns", "label,text", "--top-k", "2",
                        "--devices", devices)
    assert "0 rows" in output
    written, expected = (pq.read_table(tmp_path / f"pred-{n}.parquet") for n in ("empty", "full"))
    assert written.num_rows == 0 and written.schema.equals(expected.schema)
    assert json.loads(written.schema.metadata[b"hanclf"])["labels"] == ["mix", "neg", "pos"]
    header_only = tmp_path / "header.csv"
    header_only.write_text("id,text,label\n")
    invoke("predict", model_dir, header_only, "-o", tmp_path / "pred-header.parquet", "--keep-columns", "id")
    written = pq.read_table(tmp_path / "pred-header.parquet")
    assert written.num_rows == 0
    assert written.column_names == ["row_id", "id", "pred_label", "pred_prob", "empty_text"]
    assert written.schema.field("id").type == pa.string()  # as a CSV with rows reads it


@pytest.mark.parametrize("where", ["within a row group", "after the first row group"])
def test_predict_names_a_column_whose_type_changes_within_a_jsonl_input(model_dir, tmp_path, monkeypatch, where):
    # JSONL has no schema: each batch of lines is typed by what it holds.
    monkeypatch.setattr("hanclf.predict.INPUT_BATCH_ROWS", 10)
    if where == "after the first row group":
        monkeypatch.setattr("hanclf.predict.ROW_GROUP_ROWS", 20)
    rows = [{"id": i if i < 20 else f"x{i}", "text": "The food was awful."} for i in range(30)]
    data = tmp_path / "ids.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    with pytest.raises(UsageError) as error:
        predict_file(model_dir, data, tmp_path / "p.parquet", id_column="id", device="cpu")
    message = str(error.value)
    assert "\n" not in message and str(data) in message
    assert "column 'id'" in message and "int64" in message and "string" in message
    assert list(tmp_path.iterdir()) == [data]


def test_predict_keeps_a_jsonl_column_first_met_after_the_first_row_group(model_dir, tmp_path, monkeypatch):
    # Spark leaves null fields out: a key first met past the first row group (null so far) was
    # "the type of a column changes", as were ints that turn to floats. Both take the later type.
    monkeypatch.setattr("hanclf.predict.INPUT_BATCH_ROWS", 10)
    monkeypatch.setattr("hanclf.predict.ROW_GROUP_ROWS", 20)
    rows = [{"id": i, "text": "The food was awful.", **({"note": f"n{i}", "score": i + 0.5} if i >= 25 else {"score": i})}
            for i in range(30)]
    data = tmp_path / "late.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    predict_file(model_dir, data, tmp_path / "p.parquet", id_column="id", keep_columns=["note", "score"], device="cpu")
    written = pq.ParquetFile(tmp_path / "p.parquet")
    assert written.metadata.num_row_groups == 2 and b"hanclf" in written.schema_arrow.metadata
    table = written.read()
    assert table.schema.field("note").type == pa.string() and table.schema.field("score").type == pa.float64()
    assert table["note"].to_pylist() == [None] * 25 + [f"n{i}" for i in range(25, 30)]
    assert table["score"].to_pylist() == [float(i) for i in range(25)] + [i + 0.5 for i in range(25, 30)]
    assert table["id"].to_pylist() == list(range(30))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["late.jsonl", "p.parquet"]


@pytest.mark.parametrize("first, late, words", [
    (0, "007", ["column 'id' is", "int64", "string"]),  # "007" was the number 7
    (2**60, 0.5, ["column 'id' is", "int64", "double"]),  # ints past 2^53 do not fit floats
])
def test_predict_refuses_a_jsonl_type_change_past_the_first_row_group(model_dir, tmp_path, monkeypatch, first, late, words):
    monkeypatch.setattr("hanclf.predict.INPUT_BATCH_ROWS", 10)
    monkeypatch.setattr("hanclf.predict.ROW_GROUP_ROWS", 20)
    rows = [{"id": first + i, "text": "Awful."} for i in range(20)] + [{"id": late, "text": "Awful."}] * 10
    data = tmp_path / "ids.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    with pytest.raises(UsageError) as error:
        predict_file(model_dir, data, tmp_path / "p.parquet", id_column="id", device="cpu")
    assert all(word in str(error.value) for word in words), str(error.value)
    assert list(tmp_path.iterdir()) == [data]


def test_predict_keeps_a_struct_field_first_met_past_the_first_row_group(model_dir, tmp_path, monkeypatch):
    monkeypatch.setattr("hanclf.predict.INPUT_BATCH_ROWS", 10)
    monkeypatch.setattr("hanclf.predict.ROW_GROUP_ROWS", 20)
    rows = [{"text": "Awful.", "meta": {"a": i, **({"b": "x"} if i >= 25 else {})}} for i in range(30)]
    data = tmp_path / "meta.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    predict_file(model_dir, data, tmp_path / "p.parquet", keep_columns=["meta"], device="cpu")
    meta = pq.read_table(tmp_path / "p.parquet")["meta"].to_pylist()
    assert meta == [{"a": i, "b": None} for i in range(25)] + [{"a": i, "b": "x"} for i in range(25, 30)]


def test_predict_notes_rows_without_an_id(model_dir, tmp_path):
    source, category = tmp_path / "ids.parquet", tmp_path / "category.parquet"
    frame = pd.DataFrame({"id": ["a", None, "", "d"], "text": ["Ok.", "Good.", "Bad.", "Fine."]})
    frame.to_parquet(source)
    frame.astype({"id": "category"}).to_parquet(category)
    for data in (category, source):
        printed = invoke("predict", model_dir, data, "-o", tmp_path / "p.parquet", "--id-column", "id", "--force")
        assert "note: rows without an id (null or empty): 2; a join on the id cannot find their predictions" in printed
    assert pq.read_table(tmp_path / "p.parquet")["id"].to_pylist() == ["a", None, "", "d"]
    printed = invoke("predict", model_dir, source, "-o", tmp_path / "q.parquet")
    assert "note:" not in printed  # row_id, never missing


def test_predict_notes_when_the_caps_leave_much_of_the_input_unread(capped_model_dir, tmp_path):
    """Long tickets labelled by a model that reads 3 sentences of 4 words at most: predict says
    how much of them it never read, --quiet or not; short documents get no such note."""
    texts = [" ".join(FILLER)] * 10 + ["Great food.", "Slow service!"] * 15
    pd.DataFrame({"text": texts}).to_parquet(tmp_path / "tickets.parquet")
    cut, words, unread = words_past_the_caps(texts, 3, 4)
    # Each long one: 6 sentences, 37 tokens, 12 read; each short one 3 tokens, all read.
    assert (cut, words, unread) == (10, 10 * 37 + 30 * 3, 10 * 25)
    note = (f"note: the model reads 3 sentences of 4 words at most (data.max_sentences, data.max_words): "
            f"{unread / words:.0%} of the input's words are past them, in {cut} of 40 documents "
            f"({cut / 40:.0%}), labelled from their beginnings alone; train on such documents with larger "
            "caps (--set data.max_sentences=... --set data.max_words=...), or split them into parts")
    for quiet in ([], ["--quiet"]):
        printed = invoke("predict", capped_model_dir, tmp_path / "tickets.parquet", "-o", tmp_path / "p.parquet",
                         "--devices", "1", "-F", *quiet)
        assert [line for line in printed.splitlines() if line.startswith("note:")] == [note]
    lines: list[str] = []
    result = predict_file(capped_model_dir, tmp_path / "tickets.parquet", tmp_path / "p.parquet", device="cpu",
                          force=True, log=lines.append)
    assert (result["cut"], result["words"], result["unread_words"]) == (cut, words, unread)
    assert lines == [note]
    pd.DataFrame({"text": texts[10:]}).to_parquet(tmp_path / "short.parquet")
    printed = invoke("predict", capped_model_dir, tmp_path / "short.parquet", "-o", tmp_path / "q.parquet")
    assert "note:" not in printed
    result = predict_file(capped_model_dir, tmp_path / "short.parquet", tmp_path / "q.parquet", device="cpu", force=True)
    assert (result["cut"], result["words"], result["unread_words"]) == (0, 90, 0)

def test_predict_logs_its_progress_where_no_bar_is_drawn(model_dir, data_dir, tmp_path, monkeypatch):
    # A long predict in a batch job's log said nothing until it ended.
    monkeypatch.setattr("hanclf.predict.INPUT_BATCH_ROWS", 16)
    monkeypatch.setattr("hanclf.progress.PROGRESS_LOG_SECONDS", 0.0)
    lines: list[str] = []
    predict_file(model_dir, data_dir / "test.parquet", tmp_path / "p.parquet", device="cpu",
                 progress=False, log=lines.append)
    assert [line.split(",")[0] for line in lines] == [
        "labelled 16 rows of 60 (27%)", "labelled 32 rows of 60 (53%)", "labelled 48 rows of 60 (80%)",
        "labelled 60 rows of 60 (100%)"]
    assert re.fullmatch(r"labelled 16 rows of 60 \(27%\), about \d+ s left, \d+ rows/s", lines[0])
    lines.clear()
    predict_file(model_dir, data_dir / "train.csv", tmp_path / "q.parquet", device="cpu",
                 progress=False, log=lines.append)
    assert lines[-1].startswith("labelled 240 rows, ")  # a CSV's row count is not known up front
    for quiet in ([], ["-q"]):  # not a terminal here: lines, bar or not
        printed = invoke("predict", model_dir, data_dir / "test.parquet", "-o", tmp_path / "r.parquet", "-F", *quiet)
        assert "labelled 48 rows of 60 (80%)" in printed and "wrote" in printed
    # evaluate streams its input too: the rows read and scored so far, counted once scored.
    monkeypatch.setattr("hanclf.evaluate.BATCH_ROWS", 16)
    printed = invoke("evaluate", model_dir, data_dir / "test.parquet")
    assert [line.split(",")[0] for line in printed.splitlines() if line.startswith("read ")] == [
        "read 16 rows of 60 (27%)", "read 32 rows of 60 (53%)", "read 48 rows of 60 (80%)", "read 60 rows of 60 (100%)"]
    events: list[str] = []
    real = Predictor.predict_proba
    monkeypatch.setattr(Predictor, "predict_proba", lambda self, texts: events.append(f"scored {len(texts)}") or real(self, texts))
    evaluate_file(model_dir, data_dir / "test.parquet", device="cpu", progress=False,
                  log=lambda line: events.append(line.split(" of ")[0]))
    assert events == ["scored 16", "read 16 rows", "scored 16", "read 32 rows", "scored 16", "read 48 rows",
                      "scored 12", "read 60 rows"]



def test_explain_logs_its_progress_where_no_bar_is_drawn(model_dir, data_dir, tmp_path, monkeypatch):
    # `explain big.parquet` printed nothing for minutes in an unattended job.
    monkeypatch.setattr("hanclf.progress.PROGRESS_LOG_SECONDS", 0.0)
    lines: list[str] = []
    explain_file(model_dir, data_dir / "test.parquet", tmp_path / "a.csv", device="cpu", progress=False,
                 log=lines.append)
    assert [line.split(",")[0] for line in lines] == [
        f"explained {n} documents of 60 ({n / 60:.0%})" for n in range(1, 61)]
    assert re.fullmatch(r"explained 1 documents of 60 \(2%\), about \d+ s left, \d+ documents/s", lines[0])
    make_reviews(30).assign(split=["train", "test"] * 15).to_parquet(tmp_path / "split.parquet")
    # The total is the input's rows, at most --limit; a split's share of them is not known up front.
    for data, options, last in [
        (data_dir / "test.parquet", {"limit": 25}, "explained 25 documents of 25 (100%)"),
        (data_dir / "test.parquet", {"limit": 100}, "explained 60 documents of 60 (100%)"),
        (data_dir / "train.csv", {"limit": 10}, "explained 10 documents of 10 (100%)"),
        (data_dir / "train.csv", {}, "explained 240 documents"),
        (tmp_path / "split.parquet", {"split": "test"}, "explained 15 documents"),
        (tmp_path / "split.parquet", {"split": "test", "limit": 10}, "explained 10 documents of 10 (100%)"),
    ]:
        lines.clear()
        explain_file(model_dir, data, tmp_path / "a.csv", device="cpu", force=True, progress=False,
                     log=lines.append, **options)
        assert lines[-1].split(",")[0] == last


def test_faithfulness_logs_its_progress_where_no_bar_is_drawn(model_dir, data_dir, monkeypatch):
    monkeypatch.setattr("hanclf.progress.PROGRESS_LOG_SECONDS", 0.0)
    lines: list[str] = []
    faithfulness_file(model_dir, data_dir / "test.parquet", limit=25, device="cpu", progress=False, log=lines.append)
    assert len(lines) == 1  # 25 documents are one chunk (they and their perturbed copies scored at once)
    assert re.fullmatch(r"measured 25 documents of 25 \(100%\), about 0 s left, \d+ documents/s", lines[0])


def test_explain_quiet_logs_lines_instead_of_a_bar(model_dir, data_dir, tmp_path, monkeypatch):
    monkeypatch.setattr("hanclf.progress.PROGRESS_LOG_SECONDS", 0.0)
    monkeypatch.setattr("hanclf.progress.bar_on_stderr", lambda: True)  # as on a terminal
    command = ["explain", model_dir, data_dir / "test.parquet", "-o", tmp_path / "a.csv", "--faithfulness",
               tmp_path / "f.json", "--limit", "20", "-F"]
    for quiet, lines in (([], False), (["-q"], True)):
        printed = invoke(*command, *quiet)
        assert ("explained 20 documents of 20 (100%)" in printed) is lines
        assert ("measured 20 documents of 20 (100%)" in printed) is lines
        assert f"wrote {tmp_path / 'f.json'}" in printed

def test_progress_lines_pace_leaves_start_up_out(monkeypatch):
    # Time left counted loading the model and starting workers as if rows were labelled then.
    from hanclf.progress import RowProgress

    clock = iter([0.0, 10.0, 11.0, 12.0])  # made at 0; first 10 rows at 10 s, 10 more a second
    monkeypatch.setattr("hanclf.progress.time.perf_counter", lambda: next(clock))
    monkeypatch.setattr("hanclf.progress.PROGRESS_LOG_SECONDS", 0.0)
    lines: list[str] = []
    progress = RowProgress(100, bar=False, log=lines.append)
    for rows in (10, 20, 30):
        progress(rows)
    assert lines[1:] == ["labelled 20 rows of 100 (20%), about 8 s left, 10 rows/s",
                         "labelled 30 rows of 100 (30%), about 7 s left, 10 rows/s"]


def test_predictor_on_pandas_and_empty_text(model_dir):
    predictor = Predictor(model_dir, device="cpu")
    nothing = ["", None, "   ", "<br /><p></p>", "\u200b\u00ad", "&nbsp;"]  # markup, invisibles
    frame = pd.DataFrame({"text": ["The food was awful. They open at nine.", *nothing, "<b>Ok</b>"]})
    out = predictor(frame)
    assert out["pred_label"].iloc[0] == "neg"
    assert out["empty_text"].tolist() == [False, *[True] * len(nothing), False]
    # an empty document gets the same prediction whatever its spelling of "nothing"
    assert out["pred_prob"].iloc[1 : 1 + len(nothing)].nunique() == 1



def test_predictor_call_takes_top_k_and_threshold_as_predict_table_does(model_dir):
    predictor = Predictor(model_dir, device="cpu")
    texts = ["The food was awful. They open at nine.", "Lovely staff, great food.", "It was fine."]
    every = predictor.predict_table(texts, top_k=-1).to_pydict()["top_probs"]
    cut = float(np.median(every))  # leaves some labels out, keeps some
    kept = [sum(p >= cut for p in probs) for probs in every]
    for batch in (pd.DataFrame({"text": texts}), pa.table({"text": texts})):
        out = predictor(batch, top_k=3, threshold=cut)
        got = out.to_dict("list") if isinstance(out, pd.DataFrame) else out.to_pydict()
        assert [len(labels) for labels in got["top_labels"]] == kept
        assert all(p >= cut for probs in got["top_probs"] for p in probs)
    assert 3 * len(texts) > sum(kept) >= len(texts)
    with pytest.raises(UsageError, match="pred_label is always the most probable"):
        predictor(pd.DataFrame({"text": texts}), threshold=cut)
    with pytest.raises(UsageError, match="from 0 to 1"):
        predictor.predict_table(texts, top_k=2, threshold=1.5)



def test_predictor_call_on_the_batches_pandas_and_ray_users_have(model_dir):
    predictor = Predictor(model_dir, device="cpu")
    texts = ["The food was awful. They open at nine.", "Lovely staff, great food.", None]
    plain = predictor(pd.DataFrame({"text": texts}), top_k=2)
    # top-k cells are lists (NumPy arrays in cells did not compare, nor convert in Ray)
    assert all(type(cell) is list and len(cell) == 2 for cell in plain["top_labels"])
    category = predictor(pd.DataFrame({"text": pd.Series(texts, dtype="category")}), top_k=2)
    pd.testing.assert_frame_equal(category.drop(columns="text"), plain.drop(columns="text"))
    assert len(predictor(pd.DataFrame({"text": []}))) == 0  # an empty column is float64
    # A batch without rows has the columns and types of one with rows: Ray's empty blocks, a
    # day's empty partition, concatenated with the others (its list columns were float64).
    empty = predictor(pd.DataFrame({"text": pd.Series([], dtype=object)}), top_k=2)
    assert list(empty.columns) == list(plain.columns)
    assert (empty.dtypes == plain.dtypes).drop("text").all()
    both = pa.concat_tables([pa.Table.from_pandas(frame.drop(columns="text"), preserve_index=False)
                             for frame in (empty, plain)], promote_options="default")  # null -> list, not double
    assert both.schema.field("top_labels").type == pa.list_(pa.string()) and both.num_rows == 3
    with pytest.raises(TypeError, match="batch_format='pyarrow'"):
        predictor({"text": np.array(texts, dtype=object)})  # Ray's default batches
    with pytest.raises(UsageError) as error:
        predictor(pd.DataFrame({"text": ["A long and perfectly good review.", 3.5]}, index=["a", "b"]))
    assert str(error.value) == ("the batch's column 'text' holds float 3.5 at index 'b', not text "
                                "(str, or None for a missing one)")
    cut_emoji = pd.Series(["Fine.", "Great food \ud83d"], index=["a", "b"], dtype=object)  # half of 😀
    with pytest.raises(UsageError, match="holds half of a character .* at index 'b'; remove or replace it"):
        predictor(pd.DataFrame({"text": cut_emoji}))


def test_a_text_cut_before_tokenizing_is_not_said_to_be_read_whole(model_dir):
    # A review after an inline image's base64 longer than the part tokenized: predict and
    # explain said 0 unread tokens, 0 documents cut.
    from hanclf.data import CHARS_PER_SLOT

    predictor = Predictor(model_dir, device="cpu")
    data = predictor.artifact.config.data
    imaged = "QUJD" * (CHARS_PER_SLOT * data.max_sentences * data.max_words // 4) + " The food was great."
    attention = predictor.attend([imaged, "The food was great."])
    assert [a.unseen_tokens for a in attention] == [1, 0]
    assert [a.read_partly for a in attention] == [True, False]  # the report says "at least"
    predictor.predict_table([imaged, "The food was great."])
    assert (predictor.truncation.cut, predictor.truncation.unread) == (1, 1)


def test_threads_sharing_a_predictor_count_every_cut_document(model_dir, monkeypatch):
    # `truncation += ...` reads, adds and writes back: two threads adding at once lost a count.
    import time
    from concurrent.futures import ThreadPoolExecutor

    from hanclf.data import Truncation

    predictor = Predictor(model_dir, device="cpu")
    add = Truncation.__add__
    monkeypatch.setattr(Truncation, "__add__", lambda self, other: time.sleep(0.002) or add(self, other))
    long_text = "The food was great. " + "word " * 500  # past the caps: one cut document a call
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: predictor.predict_proba([long_text]), range(40)))
    assert (predictor.truncation.documents, predictor.truncation.cut) == (40, 40)
    # Ray and Spark pickle a predictor to ship it: its counts go along, its lock is made anew.
    import pickle

    shipped = pickle.loads(pickle.dumps(predictor))
    shipped.predict_proba([long_text])
    assert shipped.truncation.cut == 41 and predictor.truncation.cut == 40


def test_python_arguments_as_users_pass_them(model_dir, data_dir, tmp_path, monkeypatch):
    out = tmp_path / "p.parquet"
    monkeypatch.chdir(model_dir.parent)
    predict_file(model_dir.name, data_dir / "test.parquet", out, keep_columns="label", device="cpu")
    assert pq.read_table(out).column_names[:2] == ["row_id", "label"]  # one column, not l, a, b ...
    predict_file(model_dir.name, data_dir / "test.parquet", out, keep_columns=None, device="cpu", force=True)
    assert pq.read_table(out).column_names[0] == "row_id" and "label" not in pq.read_table(out).column_names
    meta = json.loads(pq.read_schema(out).metadata[b"hanclf"])
    assert meta["model"] == str(model_dir.resolve())  # where it came from, wherever it is read
    predictor = Predictor(model_dir, device="cpu")
    with pytest.raises(TypeError, match="whole number"):
        predictor.predict_table(["Great food."], top_k=2.0)
    if not torch.backends.mps.is_available():
        with pytest.raises(UsageError, match="no Apple GPU"):
            Predictor(model_dir, device="mps")
    unlabelled = tmp_path / "unlabelled.csv"
    pd.DataFrame({"text": ["Great food."] * 4}).to_csv(unlabelled, index=False)
    with pytest.raises(UsageError, match="'label'"):  # config=None: the defaults, label_column 'label'
        train(unlabelled, tmp_path / "m")
    with pytest.raises(UsageError, match="'stars'"):  # a preset by name, as --config yelp
        train(unlabelled, tmp_path / "m", "yelp")
    frame = pd.read_csv(unlabelled)
    for call in (lambda: train(frame, tmp_path / "m"), lambda: evaluate_file(model_dir, frame),
                 lambda: predict_file(model_dir, frame, out), lambda: explain_file(model_dir, frame, tmp_path / "a.csv")):
        with pytest.raises(TypeError) as error:
            call()
        assert str(error.value).endswith(": a path (str or pathlib.Path), not DataFrame; write the frame "
                                         "to a file first (frame.to_parquet('data.parquet'))")
    with pytest.raises(TypeError, match=r"^model_dir: a path \(str or pathlib.Path\), not dict$"):
        Predictor({"model": "m"})
    assert repr(predictor) == f"Predictor('{model_dir}', device='cpu', batch_size=64; 3 labels: mix, neg, pos)"
    with pytest.raises(UsageError, match="^explain_file: nothing to write; give output"):
        explain_file(model_dir, unlabelled, limit=3)  # did the work, and returned {'rows': 0, ...}

def test_python_train_reports_its_epochs_on_stderr_by_default(data_dir, tmp_path, capfd):
    # A notebook showed nothing for a whole training: the lines went to a no-op by default.
    config = load_config(None, {"model.embed_dim": 8, "model.word_hidden": 4, "model.sent_hidden": 4,
                                "train.max_epochs": 2, "train.accelerator": "cpu"})
    metrics = train(data_dir / "train.csv", tmp_path / "m", config, progress=False)
    out, err = capfd.readouterr()
    lines = err.strip().splitlines()
    assert out == "" and lines[0].startswith("216 train / 24 valid documents, 3 labels, vocabulary ")
    assert [line.split(":")[0] for line in lines[1:]] == ["epoch 1/2", "epoch 2/2"]
    assert f"valid accuracy {metrics['valid']['accuracy']:.4f}" in lines[metrics["best_epoch"] + 1]


def test_epoch_lines_reach_log_and_the_cli_prints_them_on_the_bars_console(monkeypatch):
    # Printed by a console of the CLI's own, the lines went past Lightning's live bar, which
    # drew over them (on a terminal only "epoc" of three epochs' lines was left). The bar draws
    # on rich's global console: the CLI's lines go through that one, above the bar.
    import io

    import rich
    from rich.console import Console

    from hanclf.cli import main as cli_main
    from hanclf.io import to_stderr

    assert rich.get_console().stderr  # set so by the CLI, as RichProgressBar sets it as it starts
    drawn = io.StringIO()
    monkeypatch.setattr(rich, "_console", Console(file=drawn, stderr=True))
    cli_main._log("epoch 1/3: train loss 0.5")
    # The Python API's default log too (it printed past the bar: 1-2 of 10 epoch lines lost).
    to_stderr("epoch 1/10: train loss 0.5")
    assert drawn.getvalue() == "epoch 1/3: train loss 0.5\nepoch 1/10: train loss 0.5\n"
    # And with a bar on, the epoch lines still reach the `log` a Python caller gives.
    from types import SimpleNamespace

    from pytorch_lightning.callbacks import RichProgressBar
    from rich.progress import Progress

    from hanclf.training import EpochLog

    logged = []
    bar = RichProgressBar()
    bar.progress = Progress()
    trainer = SimpleNamespace(current_epoch=0, max_epochs=3, progress_bar_callback=bar,
                              callback_metrics={"train_loss": 0.5})
    module = SimpleNamespace(valid_report={"accuracy": 0.75, "macro_f1": 0.7})
    log = EpochLog(logged.append)
    log.on_fit_start(trainer, module), log.on_train_epoch_start(trainer, module)
    log.on_train_epoch_end(trainer, module)
    assert logged[0].startswith("epoch 1/3: train loss 0.5000, valid accuracy 0.7500, macro-F1 0.7000")


def test_predictor_text_methods_take_any_column_of_texts_and_refuse_what_is_not(model_dir):
    predictor = Predictor(model_dir, device="cpu")
    texts = ["The food was awful. They open at nine.", None, "Lovely staff, great food."]
    expected = predictor.predict_proba(texts)
    for same in (pd.Series(texts), pd.Series(texts, dtype="string"), pd.Series(texts).fillna(np.nan),
                 pa.array(texts), pa.chunked_array([texts[:1], texts[1:]]),
                 pa.array(texts).dictionary_encode(), (t for t in texts)):
        np.testing.assert_allclose(predictor.predict_proba(same), expected, atol=1e-6)
    assert predictor.predict_table(pa.array(texts))["empty_text"].to_pylist() == [False, True, False]
    assert len(predictor.attend(pd.Series(texts))) == 3
    # Each of these was scored, silently, as something else: column names, empty documents.
    frame = pd.DataFrame({"id": [1, 2, 3], "text": texts})
    for wrong, message in ((frame, "one column of texts"), (pa.Table.from_pandas(frame), "one column"),
                           (["fine", b"bytes"], r"texts\[1\]: bytes"), ([3, "ok"], r"texts\[0\]: int"),
                           ("one text", "for one text")):
        for method in (predictor.predict_proba, predictor.predict_table, predictor.attend):
            with pytest.raises(TypeError, match=message):
                method(wrong)


def test_explain_without_true_labels_and_faithfulness_never_read_them(model_dir, data_dir, tmp_path):
    # A label column of other labels: refused (test_errors), unless --label-column '' leaves
    # true labels out; the faithfulness figures never need them.
    source = tmp_path / "other.parquet"
    pd.read_parquet(data_dir / "test.parquet").assign(label="other").to_parquet(source)
    invoke("explain", model_dir, source, "-o", tmp_path / "a.csv", "--label-column", "", "--limit", "3",
           "--faithfulness", tmp_path / "f.json")
    assert pd.read_csv(tmp_path / "a.csv")["true_label"].isna().all()
    assert json.loads((tmp_path / "f.json").read_text())["documents"] == 3

def test_explain_rows_per_token_with_the_paper_weight(model_dir, data_dir, tmp_path):
    out = tmp_path / "att.csv"
    invoke("explain", model_dir, data_dir / "test.parquet", "-o", out, "--id-column", "id", "--limit", "5")
    with out.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["doc_id", "sent_idx", "tok_idx", "token", "word_att", "sent_att",
                             "weight", "pred_label", "pred_prob", "true_label", "in_vocab", "unseen_tokens"]
    source = pd.read_parquet(data_dir / "test.parquet").head(5)
    assert sorted({r["doc_id"] for r in rows}) == sorted(source["id"])
    sent_att, word_sum = {}, defaultdict(float)
    for r in rows:
        key = (r["doc_id"], int(r["sent_idx"]))
        sent_att[key] = float(r["sent_att"])
        word_sum[key] += float(r["word_att"])
        assert float(r["weight"]) == pytest.approx(math.sqrt(float(r["sent_att"])) * float(r["word_att"]), abs=2e-6)
    assert all(abs(s - 1) < 1e-4 for s in word_sum.values())  # word attention sums to 1 per sentence
    per_doc = defaultdict(float)
    for (doc, _), att in sent_att.items():
        per_doc[doc] += att
    assert all(abs(s - 1) < 1e-4 for s in per_doc.values())  # sentence attention sums to 1 per doc
    # tokens, joined per sentence, are the words of the text
    first = source.iloc[0]
    tokens = [r["token"] for r in rows if r["doc_id"] == first["id"]]
    assert "".join(tokens) == first["text"].replace(" ", "")
    assert {r["true_label"] for r in rows} <= {"mix", "neg", "pos"}
    vocab = load(model_dir).vocab
    assert all(r["in_vocab"] == str(r["token"].lower() in vocab.index) for r in rows)
    unseen = tmp_path / "unseen.jsonl"
    unseen.write_text('{"text": "The zorbly food was wonderful!"}\n')
    invoke("explain", model_dir, unseen, "-o", tmp_path / "unseen.csv")
    frame = pd.read_csv(tmp_path / "unseen.csv")
    assert dict(zip(frame["token"], frame["in_vocab"])) == {
        "The": True, "zorbly": False, "food": True, "was": True, "wonderful": True, "!": True}


@pytest.mark.slow
def test_planted_sentence_gets_the_most_sentence_attention(sample_model_dir):
    """sample_data plants one deciding sentence per document among label-neutral filler."""
    test = pd.read_parquet(SAMPLE_DATA / "test.parquet")
    predictor = Predictor(sample_model_dir, device="cpu")
    attention = predictor.attend(test["text"].tolist())
    top = np.array([int(a.sent_att.argmax()) for a in attention])
    predicted = [predictor.labels.names[int(a.probs.argmax())] for a in attention]
    assert (np.array(predicted) == test["label"].to_numpy()).mean() >= 0.95
    # Measured over training seeds 42, 1, 2, 3: 0.90, 0.96, 1.00, 0.86 (chance: 0.16).
    assert (top == test["planted_sentence"].to_numpy()).mean() >= 0.8


def test_predict_and_evaluate_read_a_directory_of_parquet_files(model_dir, data_dir, tmp_path):
    source = pd.read_parquet(data_dir / "test.parquet")
    parts = tmp_path / "parts"
    parts.mkdir()
    for number, start in enumerate(range(0, len(source), 25)):
        source.iloc[start : start + 25].to_parquet(parts / f"part-{number:05d}.parquet", index=False)
    (parts / "_SUCCESS").write_text("")
    one, many = tmp_path / "one.parquet", tmp_path / "many.parquet"
    invoke("predict", model_dir, data_dir / "test.parquet", "-o", one, "--id-column", "id")
    invoke("predict", model_dir, parts, "-o", many, "--id-column", "id")
    pd.testing.assert_frame_equal(pd.read_parquet(one), pd.read_parquet(many))
    assert pd.read_parquet(many)["id"].tolist() == source["id"].tolist()
    for name, data in (("file", data_dir / "test.parquet"), ("folder", parts)):
        invoke("evaluate", model_dir, data, "-o", tmp_path / f"{name}.json")
    file, folder = (json.loads((tmp_path / f"{name}.json").read_text()) for name in ("file", "folder"))
    assert folder["accuracy"] == file["accuracy"] and folder["support"] == len(source)


def test_evaluate_prints_and_writes_metrics(model_dir, data_dir, tmp_path):
    out = tmp_path / "metrics.json"
    printed = invoke("evaluate", model_dir, data_dir / "test.parquet", "-o", out)
    metrics = json.loads(out.read_text())
    pred = Predictor(model_dir, device="cpu")
    source = pd.read_parquet(data_dir / "test.parquet")
    expected = (pred.predict_proba(source["text"].tolist()).argmax(1)
                == np.array([pred.labels.index[v] for v in source["label"]])).mean()
    assert metrics["accuracy"] == pytest.approx(expected)
    assert metrics["support"] == 60 and np.sum(metrics["confusion_matrix"]) == 60
    assert sum(r["support"] for r in metrics["per_class"].values()) == 60
    assert f"{metrics['accuracy']:.4f}" in printed and "confusion matrix" in printed


def test_outputs_go_into_folders_made_for_them(model_dir, data_dir, tmp_path):
    # Jobs write dated partitions (out/2026-11-27/p.parquet): they needed a `mkdir -p` first.
    day = tmp_path / "out" / "2026-11-27"
    source = data_dir / "test.parquet"
    invoke("predict", model_dir, source, "-o", day / "p.parquet", "--id-column", "id")
    assert pd.read_parquet(day / "p.parquet")["id"].tolist() == pd.read_parquet(source)["id"].tolist()
    invoke("explain", model_dir, source, "-o", day / "csv" / "a.csv", "--html", day / "html" / "r.html",
           "--faithfulness", day / "json" / "f.json", "--limit", "3", "--level", "sentence")
    assert pd.read_csv(day / "csv" / "a.csv")["doc_id"].nunique() == 3
    assert (day / "html" / "r.html").read_text().count("<article") == 3
    assert json.loads((day / "json" / "f.json").read_text())["documents"] == 3
    invoke("evaluate", model_dir, source, "-o", day / "eval" / "m.json")
    assert json.loads((day / "eval" / "m.json").read_text())["support"] == 60


def test_evaluate_split_selects_rows(model_dir, data_dir, tmp_path):
    frame = pd.read_parquet(data_dir / "test.parquet")
    frame["split"] = ["test" if i < 20 else "train" for i in range(len(frame))]
    path = tmp_path / "with_split.jsonl"
    frame.to_json(path, orient="records", lines=True)
    out = tmp_path / "m.json"
    printed = invoke("evaluate", model_dir, path, "--split", "test", "-o", out)
    assert json.loads(out.read_text())["support"] == 20 and "note:" not in printed
    # Without --split every row is scored, training rows too: said, since it flatters the model.
    printed = invoke("evaluate", model_dir, path, "-o", out, "--force")
    assert json.loads(out.read_text())["support"] == 60
    assert f"note: {path} has a 'split' column; every row is scored" in " ".join(printed.split())


def test_train_cli_with_valid_file_overrides_and_saved_config(data_dir, tmp_path):
    train_path, valid_path = tmp_path / "train.jsonl", tmp_path / "valid.tsv"
    frame = pd.read_csv(data_dir / "train.csv")
    frame.rename(columns={"text": "body", "label": "y"}).iloc[:200].to_json(train_path, orient="records", lines=True)
    frame.rename(columns={"text": "body", "label": "y"}).iloc[200:].to_csv(valid_path, sep="\t", index=False)
    out = tmp_path / "model"
    invoke("train", train_path, "--valid", valid_path, "-o", out, "--text-column", "body",
           "--label-column", "y", "--id-column", "id", "--max-epochs", "1", "--seed", "3", "--quiet",
           "--set", "model.word_hidden=6", "--set", "model.embed_dim=12")
    artifact = load(out)
    assert artifact.config.model["word_hidden"] == 6 and artifact.config.data.text_column == "body"
    assert artifact.config.train.seed == 3 and artifact.config.train.max_epochs == 1
    assert artifact.model.word_encoder.forward_gru.hidden_size == 6
    assert artifact.metrics["train_documents"] == 200 and artifact.metrics["valid_documents"] == 40
    # the id column given at training is copied by predict without being named again
    invoke("predict", out, valid_path, "-o", tmp_path / "p.parquet")
    pred = pd.read_parquet(tmp_path / "p.parquet")
    assert pred.columns[0] == "id" and "row_id" not in pred.columns
    assert pred["id"].tolist() == frame["id"].iloc[200:].tolist()
    # --id-column '': the row number instead of the model's id column, as explain's --label-column ''
    invoke("predict", out, valid_path, "-o", tmp_path / "p.parquet", "--id-column", "", "--force")
    assert pd.read_parquet(tmp_path / "p.parquet")["row_id"].tolist() == list(range(40))
    invoke("explain", out, valid_path, "-o", tmp_path / "s.csv", "--level", "sentence", "--id-column", "")
    assert pd.read_csv(tmp_path / "s.csv")["doc_id"].unique().tolist() == list(range(40))


def test_train_id_column_is_not_asked_of_the_valid_file(data_dir, tmp_path):
    # Only predict copies the id column; train refused a --valid file without it.
    train_path, valid_path = tmp_path / "train.csv", tmp_path / "valid.csv"
    frame = pd.read_csv(data_dir / "train.csv")
    frame.iloc[:200].to_csv(train_path, index=False)
    frame.iloc[200:].drop(columns="id").to_csv(valid_path, index=False)
    out = tmp_path / "model"
    invoke("train", train_path, "--valid", valid_path, "-o", out, "--id-column", "id", "--max-epochs", "1",
           "--quiet", "--set", "model.word_hidden=6", "--set", "model.embed_dim=12")
    assert load(out).config.data.id_column == "id" and load(out).metrics["valid_documents"] == 40
    # --id-column '' at training: no id column (as for predict and explain), not "no column ''"
    invoke("train", train_path, "--valid", valid_path, "-o", out, "--id-column", "", "--max-epochs", "1",
           "--quiet", "--force", "--set", "model.word_hidden=6", "--set", "model.embed_dim=12")
    invoke("predict", out, train_path, "-o", tmp_path / "p.parquet")
    assert pd.read_parquet(tmp_path / "p.parquet").columns[0] == "row_id"


def test_explain_sentence_level_ranks_sentences_by_attention(model_dir, data_dir, tmp_path):
    out = tmp_path / "sentences.csv"
    invoke("explain", model_dir, data_dir / "test.parquet", "-o", out, "--level", "sentence",
           "--id-column", "id", "--limit", "4")
    frame = pd.read_csv(out)
    assert list(frame.columns) == ["doc_id", "sent_idx", "sentence", "sent_att", "rank",
                                   "pred_label", "pred_prob", "true_label", "unseen_tokens"]
    source = pd.read_parquet(data_dir / "test.parquet").head(4)
    assert frame["doc_id"].unique().tolist() == source["id"].tolist()
    for _, doc in frame.groupby("doc_id"):
        assert doc["sent_att"].sum() == pytest.approx(1, abs=1e-4)
        by_rank = doc.sort_values("rank")
        assert by_rank["rank"].tolist() == list(range(1, len(doc) + 1))
        assert by_rank["sent_att"].is_monotonic_decreasing
    first = frame[frame["doc_id"] == source["id"].iloc[0]]
    assert "".join(first["sentence"]).replace(" ", "") == source["text"].iloc[0].replace(" ", "")


@pytest.mark.parametrize("level", ["token", "sentence"])
def test_explain_gives_a_document_without_words_one_row(model_dir, tmp_path, level):
    source = tmp_path / "in.jsonl"
    pd.DataFrame({"id": ["a", "b", "c"], "text": ["Great food. Nice staff.", None, " "]}).to_json(
        source, orient="records", lines=True)
    out = tmp_path / "att.csv"
    invoke("explain", model_dir, source, "-o", out, "--id-column", "id", "--level", level)
    frame = pd.read_csv(out)
    assert frame["doc_id"].unique().tolist() == ["a", "b", "c"]
    empty = frame[frame["doc_id"] != "a"]
    assert len(empty) == 2 and empty["sent_idx"].isna().all() and empty["sent_att"].isna().all()
    assert empty["pred_label"].notna().all() and (empty["pred_prob"] > 0).all()


def test_explain_top_sentences_prints_the_most_attended_sentence(model_dir, data_dir, tmp_path):
    printed = invoke("explain", model_dir, data_dir / "test.parquet", "--top-sentences", "1",
                     "--id-column", "id", "--limit", "3")
    predictor = Predictor(model_dir, device="cpu")
    texts = pd.read_parquet(data_dir / "test.parquet")["text"].head(3).tolist()
    for att in predictor.attend(texts):
        top = " ".join(att.sentences[int(att.sent_att.argmax())])
        assert top[:20] in printed
    assert "the first" not in printed
    printed = invoke("explain", model_dir, data_dir / "test.parquet", "--top-sentences", "1", "-o", tmp_path / "a.csv")
    assert "the first 50 of 60 documents" in printed  # the terminal shows 50 at most


def test_explain_top_sentences_alone_reads_no_further_than_its_table(model_dir, data_dir, tmp_path, monkeypatch):
    # It attended to every row of the input, to show 50; one more is read, to say more follow.
    attended = []
    attend = Predictor.attend
    monkeypatch.setattr(Predictor, "attend", lambda self, texts: attended.extend(texts) or attend(self, texts))
    frame = pd.read_parquet(data_dir / "test.parquet")
    printed = invoke("explain", model_dir, data_dir / "test.parquet", "--top-sentences", "1", "--id-column", "id")
    assert "the first 50 documents; the input has more" in printed
    assert str(frame["id"][49]) in printed and str(frame["id"][50]) not in printed
    assert len(attended) == 51
    attended.clear()
    invoke("explain", model_dir, data_dir / "test.parquet", "--top-sentences", "1", "-o", tmp_path / "all.csv")
    assert len(attended) == 60


@pytest.mark.parametrize("limit", ["0", "-1"])
def test_explain_top_sentences_alone_refuses_a_limit_below_one(model_dir, data_dir, limit):
    # With only the table to show, --limit 0 became 51 documents (limit or 51), printed as if asked.
    result = runner.invoke(app, ["explain", str(model_dir), str(data_dir / "test.parquet"),
                                 "--top-sentences", "1", "--limit", limit])
    assert result.exit_code == 2
    assert f"--limit {limit}: must be at least 1" in result.output


def test_explain_needs_some_output(model_dir, data_dir):
    result = runner.invoke(app, ["explain", str(model_dir), str(data_dir / "test.parquet")])
    assert result.exit_code == 2 and "give --output, --html, --top-sentences or --faithfulness" in result.output


@pytest.mark.parametrize("command", ["explain", "evaluate"])
def test_threshold_is_refused_for_a_single_label_model(model_dir, data_dir, tmp_path, command):
    args = [command, str(model_dir), str(data_dir / "test.parquet"), "--threshold", "0.3"]
    args += ["-o", str(tmp_path / "out.csv")] if command == "explain" else []
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert result.output == ("error: --threshold 0.3: applies to multi-label models only; this one "
                             "predicts its most probable label\n")
    assert list(tmp_path.iterdir()) == []


def test_explain_split_and_limit_select_rows(model_dir, data_dir, tmp_path):
    frame = pd.read_parquet(data_dir / "test.parquet")
    frame["split"] = [" Test" if i % 3 == 0 else "train" for i in range(len(frame))]
    path = tmp_path / "with_split.parquet"
    frame.to_parquet(path, index=False)
    out = tmp_path / "sentences.csv"
    invoke("explain", model_dir, path, "-o", out, "--level", "sentence", "--id-column", "id",
           "--split", "test", "--limit", "7")
    assert pd.read_csv(out)["doc_id"].unique().tolist() == frame["id"].iloc[::3].head(7).tolist()


def test_explain_faithfulness_on_planted_sentences(sample_model_dir, tmp_path):
    # One sentence decides each label, and the model attends to it: removing the most attended
    # sentence must cost far more probability than removing a random one.
    out = tmp_path / "faithfulness.json"
    printed = invoke("explain", sample_model_dir, SAMPLE_DATA / "test.parquet", "--faithfulness", out)
    figures = json.loads(out.read_text())
    assert figures["documents"] == 100 and figures["used"] == 100
    at_1 = figures["per_k"][0]
    assert at_1["k"] == 1
    assert at_1["comprehensiveness"]["attention"] >= 0.3
    assert at_1["comprehensiveness"]["ratio"] >= 3
    assert at_1["sufficiency"]["attention"] < at_1["sufficiency"]["random"]
    assert figures["flip_rate"]["attention"] > 2 * figures["flip_rate"]["random"]
    assert f"{at_1['comprehensiveness']['attention']:.4f}" in printed


def test_flat_baseline_trains_saves_and_explains(data_dir, tmp_path):
    out = tmp_path / "flat"
    invoke("train", data_dir / "train.csv", "-o", out, "--set", "model.architecture=flat",
           "--set", "model.embed_dim=16", "--set", "model.word_hidden=8", "--set", "data.min_count=1",
           "--set", "train.lr=0.01", "--max-epochs", "6", "--accelerator", "cpu")
    artifact = load(out)
    assert artifact.config.model["architecture"] == "flat"
    assert not any(name.startswith("sent_") for name in artifact.model.state_dict())
    assert json.loads((out / "metrics.json").read_text())["valid"]["accuracy"] >= 0.6  # chance: 1/3
    csv_path = tmp_path / "att.csv"
    invoke("explain", out, data_dir / "test.parquet", "-o", csv_path, "--limit", "5")
    rows = pd.read_csv(csv_path)
    # sent_att * word_att is one distribution over all the words of a document
    rows["flat"] = rows["sent_att"] * rows["word_att"]
    assert np.allclose(rows.groupby("doc_id")["flat"].sum(), 1, atol=1e-4)


def test_sentence_pooling_trains_and_its_top_sentence_decides(data_dir, tmp_path):
    out = tmp_path / "pooled"
    invoke("train", data_dir / "train.csv", "-o", out, "--set", "model.doc_pooling=sentences",
           "--set", "model.embed_dim=16", "--set", "model.word_hidden=8", "--set", "data.min_count=1",
           "--set", "train.lr=0.01", "--max-epochs", "6", "--accelerator", "cpu")
    assert load(out).config.model["doc_pooling"] == "sentences"
    assert json.loads((out / "metrics.json").read_text())["valid"]["accuracy"] >= 0.6  # chance: 1/3
    faithfulness = tmp_path / "faith.json"
    invoke("explain", out, data_dir / "test.parquet", "--faithfulness", faithfulness)
    at_1 = json.loads(faithfulness.read_text())["per_k"][0]
    assert at_1["comprehensiveness"]["ratio"] >= 3
    assert at_1["sufficiency"]["attention"] < at_1["sufficiency"]["random"]


def test_title_and_text_columns_read_as_one_document(tmp_path):
    """The label is only in the title: a model reading title,text learns it, and predict and
    explain read both columns (the model's) without being told again."""
    def titled(n: int, seed: int) -> pd.DataFrame:
        frame = make_reviews(n, seed)
        for label, cue in CUES.items():
            frame.loc[frame["label"] == label, "title"] = cue
        frame["text"] = [t.replace(c, "").strip() for t, c in zip(frame["text"], frame["title"])]
        return frame

    titled(240, 0).to_csv(tmp_path / "train.csv", index=False)
    test = titled(60, 1)
    test.to_parquet(tmp_path / "test.parquet", index=False)
    out = tmp_path / "model"
    invoke("train", tmp_path / "train.csv", "-o", out, "--text-column", "title,text",
           "--set", "model.embed_dim=16", "--set", "model.word_hidden=8", "--set", "data.min_count=1",
           "--set", "train.lr=0.01", "--max-epochs", "6", "--accelerator", "cpu", "--quiet")
    assert load(out).config.data.text_column == ["title", "text"]
    invoke("predict", out, tmp_path / "test.parquet", "-o", tmp_path / "p.parquet")
    predicted = pd.read_parquet(tmp_path / "p.parquet")["pred_label"]
    assert (predicted == test["label"]).mean() >= 0.9  # chance: 1/3; the text alone says nothing
    invoke("predict", out, tmp_path / "test.parquet", "-o", tmp_path / "p2.parquet",
           "--text-column", "title", "--text-column", "text")  # the flag repeated: the same
    assert pd.read_parquet(tmp_path / "p2.parquet")["pred_label"].tolist() == predicted.tolist()
    # Predictor on a DataFrame (Ray, Spark) reads the same two columns
    assert Predictor(out)(test.head(6))["pred_label"].tolist() == predicted.head(6).tolist()
    invoke("explain", out, tmp_path / "test.parquet", "-o", tmp_path / "s.csv", "--level", "sentence",
           "--limit", "5")
    sentences = pd.read_csv(tmp_path / "s.csv")
    first = sentences[sentences["sent_idx"] == 0].set_index("doc_id")["sentence"]
    # the title is a sentence of its own (written as its tokens)
    assert first.tolist() == [" ".join(w for s in tokenize(t) for w in s) for t in test["title"].iloc[:5]]
    assert sentences.groupby("doc_id").size().tolist() == [4] * 5  # and the text's 3 follow
    test.drop(columns="title").to_parquet(tmp_path / "untitled.parquet", index=False)
    result = runner.invoke(app, ["predict", str(out), str(tmp_path / "untitled.parquet"), "-o",
                                 str(tmp_path / "u.parquet")])
    assert result.exit_code == 2 and "no column 'title'" in result.output


def test_explain_stopped_in_its_faithfulness_pass_names_what_it_wrote(model_dir, data_dir, tmp_path, monkeypatch):
    # It said "no output was written" with the CSV and report in place.
    import hanclf.faithfulness

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(hanclf.faithfulness, "faithfulness_file", interrupted)
    csv_path, html_path = tmp_path / "a.csv", tmp_path / "a.html"
    result = runner.invoke(app, ["explain", str(model_dir), str(data_dir / "test.parquet"), "-o", str(csv_path),
                                 "--html", str(html_path), "--faithfulness", str(tmp_path / "f.json"), "--limit", "3"])
    assert result.exit_code == 130
    assert result.output.strip().splitlines()[-1] == f"interrupted: only {csv_path} and {html_path} had been written"
    assert csv_path.is_file() and html_path.is_file() and not (tmp_path / "f.json").exists()


@pytest.mark.parametrize("checkpoint", [True, False])
def test_ctrl_c_offers_resume_only_when_a_checkpoint_was_saved(tmp_path, capsys, checkpoint):
    last = tmp_path / ".model.training" / "last.ckpt"
    if checkpoint:
        last.parent.mkdir()
        last.write_bytes(b"an epoch's checkpoint")

    def interrupted() -> None:
        raise KeyboardInterrupt

    with pytest.raises(typer.Exit) as stopped:
        _run(interrupted, resumable=last)
    assert stopped.value.exit_code == 130
    message = capsys.readouterr().err
    assert message.startswith("interrupted: no output was written")
    assert ("--resume continues" in message) == checkpoint


def test_the_python_functions_take_paths_as_strings(model_dir, data_dir, tmp_path):
    test, out = str(data_dir / "test.parquet"), str(tmp_path)
    assert predict_file(str(model_dir), test, f"{out}/p.parquet")["rows"] == 60
    assert explain_file(str(model_dir), test, f"{out}/a.csv", html=f"{out}/a.html", limit=2)["documents"] == 2
    assert evaluate_file(str(model_dir), test)["support"] == 60
    assert faithfulness_file(str(model_dir), test, f"{out}/f.json", limit=3, random_repeats=1) is not None
    tiny = load_config(None, {"train.max_epochs": 1, "model.embed_dim": 8, "model.word_hidden": 4,
                              "model.sent_hidden": 4, "train.accelerator": "cpu"})
    metrics = train(str(data_dir / "train.csv"), f"{out}/m", tiny)
    assert metrics["epochs_run"] == 1 and load(tmp_path / "m").config.model["embed_dim"] == 8
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.csv", "a.html", "f.json", "m", "p.parquet"]


def test_explain_says_what_was_cut_repeated_or_too_much_for_a_browser(model_dir, tmp_path, monkeypatch):
    # Documents past the model's limits, ids that repeat and large reports went unmentioned.
    import hanclf.report

    config = load(model_dir).config.data
    long = " ".join(["The food was great."] * (config.max_sentences + 3))
    wordy = " ".join(["great"] * (config.max_words + 7)) + "."
    source = tmp_path / "in.parquet"
    pd.DataFrame({"id": ["a", "b", "a", "c", None, None, ""],
                  "text": ["Nice staff.", long, "Fine.", wordy, "Ok.", "Good.", "Bad."]}).to_parquet(source)
    monkeypatch.setattr(hanclf.report, "COMFORTABLE_DOCUMENTS", 3)
    out, html = tmp_path / "att.csv", tmp_path / "report.html"
    printed = invoke("explain", model_dir, source, "-o", out, "--html", html, "--id-column", "id")
    assert "note: documents longer than the model reads (data.max_sentences, data.max_words): 2 of 7;" in printed
    assert "note: documents with the id of an earlier one: 1; their rows share a doc_id" in printed
    assert "note: documents without an id (null or empty): 3; their rows have an empty doc_id" in printed
    assert "note: the HTML report holds 7 documents; browsers slow down past about 3" in printed
    page = html.read_text()
    assert page.count('class="cut"') == 2
    assert "and 15 more tokens past" in page  # 3 sentences of 5 tokens
    assert "and 8 more tokens past" in page  # 7 words and the period
    counts = explain_file(model_dir, source, tmp_path / "again.csv", id_column="id")
    assert (counts["cut"], counts["repeated_ids"], counts["no_id"]) == (2, 1, 3)
    quiet = invoke("explain", model_dir, source, "-o", tmp_path / "first.csv", "--limit", "1")
    assert "note:" not in quiet


@pytest.mark.parametrize("select_on, best_epoch", [("accuracy", 1), ("macro_f1", 2)])
def test_select_on_keeps_the_epoch_best_on_that_figure(data_dir, tmp_path, monkeypatch, select_on, best_epoch):
    # On skewed labels accuracy can peak where a rare label is never predicted; users choose
    # macro-F1 instead. Valid figures are scripted per epoch so that the two disagree.
    from hanclf.module import HANClassifier

    scripted = {0: (0.5, 0.5), 1: (0.9, 0.4), 2: (0.6, 0.8)}  # epoch: (accuracy, macro-F1)
    real_metrics = HANClassifier.metrics_of

    def metrics_of(self, probs, targets):
        accuracy, macro_f1 = scripted.get(self.current_epoch, (0.0, 0.0))
        return {**real_metrics(self, probs, targets), "accuracy": accuracy, "macro_f1": macro_f1}

    monkeypatch.setattr(HANClassifier, "metrics_of", metrics_of)
    config = load_config(None, {
        "model.embed_dim": 8, "model.word_hidden": 4, "model.sent_hidden": 4, "model.word_att_dim": 4,
        "model.sent_att_dim": 4, "train.max_epochs": 3, "train.patience": 5,
        "train.accelerator": "cpu", "train.select_on": select_on,
    })
    metrics = train(data_dir / "train.csv", tmp_path / "m", config, progress=False)
    assert metrics["best_epoch"] == best_epoch


def test_train_help_states_the_defaults_of_the_default_config():
    # The flags default to None so that a preset or --set can decide; their help says the
    # default config's value, which must stay the one the config really has.
    config = load_config(None, {})
    expected = {
        "text_column": config.data.text_column, "label_column": config.data.label_column,
        "label_separator": config.data.label_separator, "valid_fraction": config.data.valid_fraction,
        "embeddings": config.train.embeddings, "seed": config.train.seed,
        "max_epochs": config.train.max_epochs, "accelerator": config.train.accelerator,
        "devices": config.train.devices, "precision": config.train.precision,
        "strategy": config.train.strategy, "num_nodes": config.train.num_nodes,
    }
    command = typer.main.get_command(app).commands["train"]
    helps = {p.name: getattr(p, "help", None) or "" for p in command.params}
    for name, value in expected.items():
        assert f"[default: {value}" in helps[name], (name, helps[name])


@pytest.mark.slow
def test_train_leaves_the_callers_random_generators_environment_and_warnings_alone(data_dir, tmp_path, capfd):
    import logging
    import os
    import random
    import warnings

    def draws() -> tuple:
        return random.random(), float(np.random.rand()), float(torch.rand(1))

    random.seed(7), np.random.seed(7), torch.manual_seed(7)
    expected = draws()
    random.seed(7), np.random.seed(7), torch.manual_seed(7)
    filters, level = list(warnings.filters), logging.getLogger("pytorch_lightning").level
    environment = {name: os.environ.get(name) for name in ("PL_GLOBAL_SEED", "PL_SEED_WORKERS")}
    config = load_config(None, {"model.embed_dim": 8, "model.word_hidden": 4, "model.sent_hidden": 4,
                                "train.max_epochs": 1, "train.accelerator": "cpu"})
    capfd.readouterr()
    train(data_dir / "train.csv", tmp_path / "m", config)  # stderr is no terminal: no bar
    lines = capfd.readouterr().err.splitlines()  # hanclf's own lines, none of Lightning's
    assert lines[0].startswith("216 train / 24 valid") and [line[:10] for line in lines[1:]] == ["epoch 1/1:"]
    assert draws() == expected  # not the draws after the training seed, 42
    assert {name: os.environ.get(name) for name in environment} == environment
    assert warnings.filters == filters and logging.getLogger("pytorch_lightning").level == level


def readme_python(marker: str) -> str:
    """The README's Python block that holds `marker`."""
    blocks = re.findall(r"```python\n(.*?)```", (Path(__file__).parent.parent / "README.md").read_text(), re.S)
    found = [block for block in blocks if marker in block]
    assert len(found) == 1, f"the README has {len(found)} Python blocks with {marker!r}"
    return found[0]


def test_readme_reads_the_attention_csv_with_tokens_and_ids_as_written(model_dir, tmp_path, monkeypatch):
    # pd.read_csv's defaults turned the tokens None, NA and null into NaN and the id 007 into 7,
    # which no longer joined predict's "007": the README gave no way to read the file as written.
    source = tmp_path / "in.csv"
    pd.DataFrame({"id": ["007", "008", "009"],
                  "text": ["None of it was good. NA", "The null set.", ""]}).to_csv(source, index=False)
    runs = tmp_path / "runs"
    invoke("explain", model_dir, source, "-o", runs / "attention.csv", "--id-column", "id")
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(readme_python('"runs/attention.csv", dtype='), scope)
    attention = scope["attention"]
    assert attention["doc_id"].unique().tolist() == ["007", "008", "009"]
    assert attention["token"].tolist()[:1] + attention["token"].tolist()[6:9] == ["None", "NA", "The", "null"]
    assert attention["token"].isna().tolist() == [False] * 11 + [True]  # 009: no word, one row
    assert attention["weight"].dtype == float and attention["weight"].iloc[:11].notna().all()
    # 009's row has empty sent_idx and tok_idx too: left as "", they made both columns text
    assert attention["sent_idx"].dtype == float and attention["tok_idx"].iloc[:3].tolist() == [0, 1, 2]
    assert scope["why"]["doc_id"].eq("007").all() and len(scope["why"]) == 5


@pytest.mark.parametrize("level", ["token", "sentence"])
def test_explain_csv_says_which_documents_were_cut_and_by_how_much(model_dir, tmp_path, level):
    # Only a count went to stderr: the CSV listed the words of a cut document as if they were all
    # of it, with nothing to say that the model never read the rest.
    config = load(model_dir).config.data
    long = " ".join(["The food was great."] * (config.max_sentences + 3))
    wordy = " ".join(["great"] * (config.max_words + 7)) + "."
    source = tmp_path / "in.parquet"
    pd.DataFrame({"id": ["short", "long", "wordy", "empty"], "text": ["Nice staff.", long, wordy, ""]}).to_parquet(source)
    out = tmp_path / "att.csv"
    invoke("explain", model_dir, source, "-o", out, "--id-column", "id", "--level", level)
    frame = pd.read_csv(out, keep_default_na=False)
    assert frame.columns[-1] == "unseen_tokens"
    unseen = frame.groupby("doc_id", sort=False)["unseen_tokens"].agg(["min", "max"])
    assert unseen["min"].to_dict() == unseen["max"].to_dict() == {"short": 0, "long": 15, "wordy": 8, "empty": 0}


def test_labels_and_ids_in_square_brackets_are_printed_as_written(data_dir, tmp_path):
    # rich read table cells as markup: [pos] vanished, [bold]mix became "mix" and [/neg] failed
    # evaluate with a MarkupError traceback.
    brackets = {"pos": "[pos]", "neg": "[/neg]", "mix": "[bold]mix"}
    rows = make_reviews(120).assign(label=lambda d: d["label"].map(brackets), id=lambda d: "[" + d["id"] + "]")
    rows.to_csv(tmp_path / "train.csv", index=False)
    config = load_config(None, {"model.embed_dim": 16, "model.word_hidden": 8, "model.sent_hidden": 8,
                                "train.max_epochs": 2, "train.accelerator": "cpu", "data.min_count": 1})
    train(tmp_path / "train.csv", tmp_path / "model", config, progress=False)
    printed = invoke("evaluate", tmp_path / "model", tmp_path / "train.csv", "--device", "cpu")
    per_class = printed[printed.index("per class"):]
    for label in brackets.values():
        assert per_class.count(label) >= 2  # its row, and its row and column of the confusion matrix
    printed = invoke("explain", tmp_path / "model", tmp_path / "train.csv", "--top-sentences", "1",
                     "--id-column", "id", "--limit", "2", "--device", "cpu")
    assert "[d0000]" in printed and "[d0001]" in printed
