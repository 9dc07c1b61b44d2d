"""The error contract of the CLI, one table row per way to get it wrong.

Bad input must give ONE line on stderr, `error: ...`, naming the file / column / row / key
concerned and what to do; exit 2 when the user's input or flags are wrong, 1 when something
failed at run time; no traceback; no output (nor a `.NAME.*.tmp` beside it) left behind; and
an existing output is never touched without --force.

Each case builds its bad input under tmp_path and returns the command line. `check_case` runs it
in-process (typer's CliRunner) and checks every invariant; a few cases run again through
`python -m hanclf` to show the installed entry point behaves the same.
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import random
import shutil
import subprocess
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from typer.testing import CliRunner

from hanclf.artifact import REQUIRED
from hanclf.cli.main import app
from hanclf.errors import UsageError
from tests.conftest import SAMPLE_DATA
from hanclf.training import _check_model_output

pytestmark = pytest.mark.slow  # ~40 s: 70 CLI runs, 3 of them in a fresh interpreter, 1 training

NOISE = random.Random(0).randbytes(4096)  # neither Parquet nor safetensors
NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")


# --- the bad inputs are built here -------------------------------------------------------------


@dataclass
class Env:
    root: Path  # inputs of the case
    out: Path  # where outputs go: must look exactly the same after a failed run
    data: Path  # conftest's data_dir: train.csv (labels pos/neg/mix), test.parquet
    model: Path  # conftest's model_dir: a tiny trained model

    def file(self, name: str, content: str | bytes) -> Path:
        path = self.root / name
        if isinstance(content, str):
            path.write_text(content, encoding="utf-8")
        else:
            path.write_bytes(content)
        return path

    def dir(self, name: str) -> Path:
        (self.root / name).mkdir()
        return self.root / name

    def reviews(self, n: int = 30) -> pd.DataFrame:
        """n rows (id, text, label) of the shared training data, all three labels present."""
        return pd.read_csv(self.data / "train.csv").head(n).reset_index(drop=True)

    def table(self, name: str, frame: pd.DataFrame | pa.Table) -> Path:
        path = self.root / name
        if isinstance(frame, pa.Table):
            pq.write_table(frame, path)
        elif path.suffix == ".parquet":
            frame.to_parquet(path, index=False)
        else:
            frame.to_csv(path, index=False)
        return path

    def model_copy(self) -> Path:
        copy = self.root / "model"
        shutil.copytree(self.model, copy)
        return copy


def predict(env: Env, data: Path, *flags: str, model: Path | None = None, out: str = "pred.parquet") -> list[str]:
    return ["predict", str(model or env.model), str(data), "-o", str(env.out / out), *flags]


def explain(env: Env, data: Path, *flags: str, model: Path | None = None, out: str = "att.csv") -> list[str]:
    return ["explain", str(model or env.model), str(data), "-o", str(env.out / out), *flags]


def evaluate(env: Env, data: Path, *flags: str, model: Path | None = None) -> list[str]:
    return ["evaluate", str(model or env.model), str(data), *flags]


def train(env: Env, data: Path, *flags: str, out: str = "model") -> list[str]:
    # --max-epochs 1: should a case wrongly get as far as training, it stays short.
    return ["train", str(data), "-o", str(env.out / out), "-q", "--max-epochs", "1", *flags]


def parquet_folder(env: Env) -> Path:
    """A Spark-style folder of two Parquet part files."""
    folder = env.dir("parts")
    frame = env.reviews(12)
    frame.iloc[:6].to_parquet(folder / "part-0.parquet")
    frame.iloc[6:].to_parquet(folder / "part-1.parquet")
    return folder


def empty_part(env: Env) -> Path:
    """A folder of Parquet parts, one of them 0 bytes (a writer killed before its footer)."""
    folder = parquet_folder(env)
    (folder / "part-2.parquet").write_bytes(b"")
    return folder


def csv_with_text(env: Env, name: str = "in.csv") -> Path:
    return env.table(name, env.reviews(12))


def bad_jsonl(env: Env) -> Path:
    """JSON Lines broken on line 3: read, and found bad, once the output is being written."""
    return env.file("bad.jsonl", '{"text": "Good."}\n{"text": "Fine."}\n{"text": \n')


def existing(env: Env, name: str) -> Path:
    """An output left by an earlier run; the case must leave it byte for byte as it is."""
    if name == "model":
        (env.out / name).mkdir()
        for file in REQUIRED:
            (env.out / name / file).write_text("an earlier model\n")
    else:
        (env.out / name).write_text("an earlier output\n")
    return env.out / name


def folder(env: Env, name: str) -> Path:
    """A directory of someone else's files where an output is to go."""
    (env.out / name).mkdir()
    (env.out / name / "part-0.parquet").write_text("not ours\n")
    return env.out / name


def bad_text_row(value: object, row: int, suffix: str = ".csv") -> Callable[[Env], list[str]]:
    def build(env: Env) -> list[str]:
        frame = env.reviews(30)
        frame["text"] = frame["text"].astype(object)
        frame.loc[row - 1, "text"] = value
        return train(env, env.table(f"train{suffix}", frame))

    return build


def latin1_in(column: str) -> Callable[[Env], Path]:
    """Reviews in Parquet whose string `column` holds Latin-1 bytes on row 5 (Hive and Spark
    write such columns; Arrow does not check them)."""
    def build(env: Env) -> Path:
        frame = env.reviews(30)
        values = [str(v).encode() for v in frame[column]]
        values[4] = "Caf\xe9 cr\xe8me".encode("latin-1")
        table = pa.Table.from_pandas(frame, preserve_index=False)
        latin1 = pa.array(values, pa.binary()).view(pa.string())
        return env.table("latin1.parquet", table.set_column(table.schema.get_field_index(column), column, latin1))

    return build


def tampered_model(change: Callable[[Path], None], command=None) -> Callable[[Env], list[str]]:
    """A copy of the tiny model with `change` applied, given to predict (or `command`)."""

    def build(env: Env) -> list[str]:
        model = env.model_copy()
        change(model)
        return (command or predict)(env, csv_with_text(env), model=model)

    return build


def set_embed_dim(model: Path) -> None:
    config = model / "config.yaml"
    text = config.read_text()
    assert "embed_dim: 16" in text
    config.write_text(text.replace("embed_dim: 16", "embed_dim: 32"))


class Payload:
    """Unpickling this creates `marker`: proof that a loader ran pickle on the file."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def pickle_as_weights(save: str) -> Callable[[Path], None]:
    def change(model: Path) -> None:
        weights = model / "model.safetensors"
        payload = Payload(model.parent / "PWNED")
        if save == "pickle":
            weights.write_bytes(pickle.dumps(payload))
        else:
            torch.save(payload, weights)

    return change


# --- the table ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    id: str
    build: Callable[[Env], list[str]]  # makes the bad input, returns the command line
    code: int  # 2: the user's input or flags are wrong; 1: failed at run time
    mentions: tuple[str, ...] = ()  # must appear in the error line
    usage: bool = False  # a click usage error (multi-line): check exit 2 and no traceback only
    absent: tuple[str, ...] = ()  # paths under the case's input dir that must not exist after
    marks: tuple = ()

    def param(self):
        return pytest.param(self, id=self.id, marks=list(self.marks))


CASES = [
    # -- input files
    Case("predict-missing-input", lambda e: predict(e, e.root / "nope.csv"), 2, ("nope.csv", "no such file")),
    Case("explain-missing-parquet-input", lambda e: explain(e, e.root / "nope.parquet"), 2, ("nope.parquet", "no such file")),
    Case("evaluate-input-is-directory", lambda e: evaluate(e, e.dir("dir.csv")), 2, ("dir.csv", "directory")),
    Case("train-unknown-extension-xlsx", lambda e: train(e, e.file("data.xlsx", b"PK\x03\x04")), 2, ("data.xlsx", ".xlsx", ".parquet")),
    Case("explain-empty-file", lambda e: explain(e, e.file("empty.csv", b"")), 2, ("empty.csv", "empty")),
    Case("train-header-only-csv", lambda e: train(e, e.file("header.csv", "id,text,label\n")), 2, ("header.csv", "no rows")),
    Case("predict-missing-text-column", lambda e: predict(e, e.file("body.csv", "id,body\n1,Nice place.\n")), 2, ("body.csv", "'text'", "id, body", "--text-column")),
    Case("predict-title-line-above-header", lambda e: predict(e, e.file("export.csv", "Support tickets export 2024-05-01,,\nid,text,label\n1,Good.,pos\n")), 2, ("export.csv", "no column 'text'", "first line looks like a title", "remove the lines above the header")),
    Case("train-missing-id-column", lambda e: train(e, e.data / "train.csv", "--id-column", "doc"), 2, ("train.csv", "'doc'", "--id-column")),
    Case("train-missing-label-column", lambda e: train(e, e.table("stars.csv", e.reviews().rename(columns={"label": "stars"}))), 2, ("stars.csv", "'label'", "stars", "--label-column")),
    Case("train-empty-text-row", bad_text_row("", 5), 2, ("train.csv", "row 5 (iloc 4)", "'text'")),
    Case("train-whitespace-text-row", bad_text_row("   ", 7), 2, ("train.csv", "row 7", "'text'")),
    Case("train-null-text-row-parquet", bad_text_row(None, 3, ".parquet"), 2, ("train.parquet", "row 3", "'text'")),
    Case("train-empty-text-rows-counted", lambda e: train(e, e.table("train.csv", e.reviews().assign(text=lambda f: f.text.where(~f.index.isin([2, 7, 8]), "")))), 2, ("train.csv", "3 rows, the first row 3 (iloc 2), have empty text", "'text'")),
    Case("train-null-label-rows-named-by-split", lambda e: train(e, e.table("train.csv", e.reviews(40).assign(split=["train"] * 30 + ["valid"] * 10, label=lambda f: f.label.where(~f.index.isin([3, 35]))))), 2, ("train.csv (split=train)", "row 4 (iloc 3) has no label")),
    Case("train-null-label-row", lambda e: train(e, e.table("train.csv", e.reviews().assign(label=lambda f: f.label.where(f.index != 3)))), 2, ("train.csv", "row 4", "'label'")),
    Case("train-single-class", lambda e: train(e, e.table("one.csv", e.reviews().assign(label="pos"))), 2, ("one.csv", "one class", "pos", "'label'")),
    Case("train-valid-label-not-in-train", lambda e: train(e, e.data / "train.csv", "--valid", str(e.table("valid.csv", e.reviews(9).assign(label=["pos", "neg", "other"] * 3)))), 2, ("valid.csv", "'other'")),
    Case("train-valid-file-split-has-no-valid-rows", lambda e: train(e, e.data / "train.csv", "--valid", str(e.table("valid.csv", e.reviews(9).assign(split="test")))), 2, ("valid.csv", "'split'", "'valid'")),
    Case("train-valid-missing-file", lambda e: train(e, e.data / "train.csv", "--valid", str(e.root / "nope.csv")), 2, ("nope.csv", "no such file")),
    Case("predict-corrupt-parquet", lambda e: predict(e, e.file("bad.parquet", NOISE)), 1, ("bad.parquet", "parquet")),
    Case("train-corrupt-parquet", lambda e: train(e, e.file("bad.parquet", NOISE)), 1, ("bad.parquet", "parquet")),
    Case("predict-parquet-text-int64", lambda e: predict(e, e.table("nums.parquet", pa.table({"text": pa.array([1, 2, 3], pa.int64())}))), 2, ("nums.parquet", "'text'", "int64", "--text-column")),
    Case("train-parquet-text-int64", lambda e: train(e, e.table("nums.parquet", pa.table({"text": pa.array(range(30), pa.int64()), "label": ["a", "b"] * 15}))), 2, ("nums.parquet", "'text'", "int64")),
    # Invalid UTF-8 in a CSV is refused (the CSV reader checks it), not silently replaced.
    Case("predict-csv-not-utf8", lambda e: predict(e, e.file("latin1.csv", "id,text\n1,Good.\n2,Caf\xe9 cr\xe8me!\n".encode("latin-1"))), 1, ("latin1.csv", "line 3", "UTF-8")),
    Case("train-csv-not-utf8", lambda e: train(e, e.file("latin1.csv", ("text,label\n" + "Caf\xe9 cr\xe8me!,pos\nBad.,neg\n" * 10).encode("latin-1"))), 1, ("latin1.csv", "line 2", "UTF-8")),
    # Excel's "Unicode Text" is UTF-16: it was "Expected 5 columns, got 6" or "line 1 is not valid UTF-8".
    Case("predict-csv-utf16", lambda e: predict(e, e.file("u16.csv", "id,text\n1,Good.\n2,Caf\xe9 cr\xe8me!\n".encode("utf-16"))), 1, ("u16.csv", "UTF-16", "save it as UTF-8")),
    Case("train-tsv-utf16", lambda e: train(e, e.file("u16.tsv", ("text\tlabel\n" + "Good.\tpos\nBad.\tneg\n" * 10).encode("utf-16"))), 1, ("u16.tsv", "UTF-16", "save it as UTF-8")),
    Case("predict-jsonl-utf16", lambda e: predict(e, e.file("u16.jsonl", '{"text": "Good."}\n'.encode("utf-16"))), 1, ("u16.jsonl", "UTF-16", "save it as UTF-8")),
    Case("predict-jsonl-lone-surrogate-escape", lambda e: predict(e, e.file("cut.jsonl", '{"text": "Fine."}\n{"text": "Great food \\ud83d"}\n')), 2, ("cut.jsonl", "line 2", "half of a character", "remove it")),
    Case("predict-jsonl-not-utf8", lambda e: predict(e, e.file("latin1.jsonl", '{"text": "Good."}\n{"text": "Caf\xe9"}\n'.encode("latin-1"))), 1, ("latin1.jsonl", "line 2", "UTF-8")),
    Case("predict-csv-ragged-row", lambda e: predict(e, e.file("ragged.csv", "id,text\n1,Good.\n2,Bad.,extra\n")), 1, ("ragged.csv", "csv")),
    # Spreadsheet exports repeat column names; pyarrow's KeyError escaped as a traceback.
    Case("evaluate-csv-repeated-column", lambda e: evaluate(e, e.file("dup.csv", "body,text,label,text\nA,Good.,pos,B\n")), 2, ("dup.csv", "column 'text' appears 2 times", "rename")),
    Case("train-csv-repeated-column", lambda e: train(e, e.file("dup.csv", "text,label,label\n" + "Good.,pos,x\nBad.,neg,y\n" * 10)), 2, ("dup.csv", "column 'label' appears 2 times")),
    Case("predict-csv-repeated-column", lambda e: predict(e, e.file("dup.csv", "text,text\nGood.,Bad.\n")), 2, ("dup.csv", "column 'text' appears 2 times")),
    Case("evaluate-malformed-jsonl", lambda e: evaluate(e, e.file("bad.jsonl", '{"text": "ok", "label": "pos"}\n{not json\n')), 1, ("bad.jsonl", "jsonl")),
    # -- model directories
    Case("predict-arguments-swapped", lambda e: predict(e, e.model, model=csv_with_text(e)), 2, ("model", "is a hanclf model, not data", "MODEL INPUT")),
    Case("predict-model-dir-missing", lambda e: predict(e, csv_with_text(e), model=e.root / "nomodel"), 2, ("nomodel", "hanclf train")),
    Case("explain-model-missing-vocab", tampered_model(lambda m: (m / "vocab.json").unlink(), explain), 2, ("model", "vocab.json")),
    Case("evaluate-model-garbage-weights", tampered_model(lambda m: (m / "model.safetensors").write_bytes(NOISE), evaluate), 1, ("model.safetensors", "safetensors")),
    Case("predict-model-config-embed-dim-tampered", tampered_model(set_embed_dim), 1, ("model.safetensors", "config.yaml")),
    Case("predict-model-pickle-as-weights", tampered_model(pickle_as_weights("pickle")), 1, ("model.safetensors",), absent=("PWNED",)),
    Case("predict-model-torch-save-as-weights", tampered_model(pickle_as_weights("torch")), 1, ("model.safetensors",), absent=("PWNED",)),
    Case("predict-model-config-yaml-damaged", tampered_model(lambda m: (m / "config.yaml").write_text("model: [1\ntrain: {")), 1, ("config.yaml", "damaged"),),
    Case("predict-model-labels-json-damaged", tampered_model(lambda m: (m / "labels.json").write_text("{labels: ")), 1, ("labels.json",),),
    Case("predict-model-config-unknown-key", tampered_model(lambda m: (m / "config.yaml").write_text((m / "config.yaml").read_text().replace("model:\n", "model:\n  embed_size: 16\n"))), 1, ("config.yaml", "model.embed_size"),),
    # -- evaluate
    Case("evaluate-null-label-row", lambda e: evaluate(e, e.table("gaps.csv", e.reviews(9).assign(label=lambda f: f.label.where(f.index != 2)))), 2, ("gaps.csv", "row 3 (iloc 2)", "'label'")),
    Case("evaluate-missing-label-column", lambda e: evaluate(e, e.table("nolabel.csv", e.reviews(9).drop(columns="label"))), 2, ("nolabel.csv", "'label'", "--label-column")),
    Case("evaluate-threshold-on-a-single-label-model", lambda e: evaluate(e, e.data / "test.parquet", "--threshold", "0.3"), 2, ("--threshold 0.3", "multi-label")),
    Case("evaluate-label-separator-on-a-single-label-model", lambda e: evaluate(e, e.data / "test.parquet", "--label-separator", "|"), 2, ("--label-separator", "multi-label")),
    Case("explain-split-value-absent", lambda e: explain(e, e.table("splits.csv", e.reviews(9).assign(split=["train", "dev", "holdout"] * 3)), "--split", "test"), 2, ("splits.csv", "split=test", "'holdout', 'train', 'valid'")),
    Case("evaluate-split-value-absent", lambda e: evaluate(e, e.table("splits.parquet", e.reviews(9).assign(split=["train", "Valid", None] * 3)), "--split", "test"), 2, ("splits.parquet", "split=test", "'train', 'valid', null")),
    Case("evaluate-split-without-split-column", lambda e: evaluate(e, e.data / "test.parquet", "--split", "test"), 2, ("test.parquet", "--split test", "'split'")),
    # -- outputs
    Case("predict-output-exists", lambda e: existing(e, "pred.parquet") and predict(e, csv_with_text(e)), 2, ("pred.parquet", "--force")),
    Case("explain-output-exists", lambda e: existing(e, "att.csv") and explain(e, csv_with_text(e)), 2, ("att.csv", "--force")),
    Case("evaluate-output-exists", lambda e: existing(e, "metrics.json") and evaluate(e, e.data / "test.parquet", "-o", str(e.out / "metrics.json")), 2, ("metrics.json", "--force")),
    Case("train-output-exists", lambda e: existing(e, "model") and train(e, e.data / "train.csv"), 2, ("model", "--force")),
    # --force replaces an output of the same kind only: never a directory (a Spark-style
    # folder of part files, say) with a file, a file with a model, or a folder that is no model.
    Case("predict-force-output-is-directory", lambda e: folder(e, "pred.parquet") and predict(e, csv_with_text(e), "--force"), 2, ("pred.parquet", "is a directory")),
    Case("explain-force-output-is-directory", lambda e: folder(e, "att.csv") and explain(e, csv_with_text(e), "--force"), 2, ("att.csv", "is a directory")),
    Case("evaluate-force-output-is-directory", lambda e: folder(e, "m.json") and evaluate(e, e.data / "test.parquet", "-o", str(e.out / "m.json"), "--force"), 2, ("m.json", "is a directory")),
    Case("train-force-output-is-file", lambda e: existing(e, "model.txt") and train(e, e.data / "train.csv", "--force", out="model.txt"), 2, ("model.txt", "is a file")),
    Case("train-force-model-holds-other-files", lambda e: existing(e, "model") and (e.out / "model" / "NOTES.txt").write_text("mine") and train(e, e.data / "train.csv", "--force"), 2, ("model", "NOTES.txt", "would delete")),
    # Hidden ones too (.git, .env): --force deleted them without a word.
    Case("train-force-model-holds-hidden-files", lambda e: existing(e, "model") and (e.out / "model" / ".git").mkdir() is None and (e.out / "model" / ".env").write_text("KEY=1") and train(e, e.data / "train.csv", "--force"), 2, ("model", ".env, .git", "would delete")),
    Case("evaluate-output-over-a-models-own-file", lambda e: evaluate(e, e.data / "test.parquet", "-o", str(e.model_copy() / "metrics.json"), "--force"), 2, ("metrics.json", "model directory")),
    # Without --force too: "already exists; pass --force" sent the user to a flag that is refused.
    Case("evaluate-output-over-a-models-own-file-without-force", lambda e: evaluate(e, e.data / "test.parquet", "-o", str(e.model_copy() / "metrics.json")), 2, ("metrics.json", "model directory")),
    Case("explain-output-over-a-models-own-file", lambda e: ["explain", str(e.model), str(csv_with_text(e)), "-o", str(e.model_copy() / "history.csv")], 2, ("history.csv", "model directory")),
    Case("explain-faithfulness-over-a-models-own-file", lambda e: ["explain", str(e.model), str(e.data / "test.parquet"), "--faithfulness", str(e.model_copy() / "labels.json")], 2, ("labels.json", "model directory")),
    Case("explain-faithfulness-same-path-as-csv", lambda e: explain(e, csv_with_text(e), "--faithfulness", str(e.out / "att.csv"), "--force"), 2, ("att.csv", "--faithfulness")),
    Case("explain-faithfulness-not-json", lambda e: explain(e, csv_with_text(e), "--faithfulness", str(e.out / "f.csv")), 2, ("f.csv", "JSON")),
    Case("evaluate-force-output-is-a-pipe", lambda e: os.mkfifo(e.out / "fifo.json") or evaluate(e, e.data / "test.parquet", "-o", str(e.out / "fifo.json"), "--force"), 2, ("fifo.json", "not a regular file")),
    Case("evaluate-force-output-is-a-symlink", lambda e: existing(e, "m.json") and (e.out / "link.json").symlink_to(e.out / "m.json") or evaluate(e, e.data / "test.parquet", "-o", str(e.out / "link.json"), "--force"), 2, ("link.json", "symbolic link")),
    Case("evaluate-output-is-stdout-dash", lambda e: evaluate(e, e.data / "test.parquet", "-o", str(e.out / "-")), 2, ("-", "not stdout")),
    Case("predict-parquet-folder-with-an-empty-file", lambda e: predict(e, empty_part(e)), 1, ("parts", "parquet")),
    Case("train-force-output-is-not-a-model", lambda e: folder(e, "model") and train(e, e.data / "train.csv", "--force"), 2, ("model", "no hanclf model")),
    # Every command makes the missing parents of its outputs (runs/a/model, out/2026-11-27/p.parquet
    # are fine), but a failed run must not leave them.
    Case("predict-fails-after-making-output-parents", lambda e: predict(e, bad_jsonl(e), out="2026-11-27/a/pred.parquet"), 1, ("bad.jsonl", "line 3")),
    Case("explain-fails-after-making-output-parents", lambda e: explain(e, bad_jsonl(e), out="missing/att.csv"), 1, ("bad.jsonl", "line 3")),
    Case("evaluate-output-parent-is-a-file", lambda e: existing(e, "day") and evaluate(e, e.data / "test.parquet", "-o", str(e.out / "day" / "m.json")), 2, ("day", "not a directory")),
    Case("train-fails-after-making-output-parents", lambda e: train(e, e.file("header.csv", "id,text,label\n"), out="runs/a/model"), 2, ("header.csv", "no rows"),),
    Case("predict-keep-column-named-like-an-output", lambda e: predict(e, e.table("own.csv", e.reviews(12).assign(pred_label="x")), "--keep-columns", "pred_label"), 2, ("own.csv", "'pred_label'", "rename")),
    Case("predict-keep-column-row-id", lambda e: predict(e, e.table("own.csv", e.reviews(12).assign(row_id=7)), "--keep-columns", "row_id"), 2, ("own.csv", "'row_id'", "rename")),
    Case("predict-input-has-row-id-column", lambda e: predict(e, e.table("own.csv", e.reviews(12).assign(row_id=range(100, 112)))), 2, ("own.csv", "'row_id'", "--id-column row_id")),
    # --force never replaces the input with the output.
    Case("predict-force-output-is-input", lambda e: predict(e, (p := e.table("in.parquet", e.reviews(12))), "--force", out=str(p)), 2, ("in.parquet", "is the input")),
    # ... nor writes into an input folder, whose Parquet files are all read as data.
    Case("predict-output-inside-input-directory", lambda e: predict(e, (d := parquet_folder(e)), out=str(d / "pred.parquet")), 2, ("pred.parquet", "inside the input directory")),
    Case("explain-force-output-is-input", lambda e: explain(e, (p := csv_with_text(e)), "--force", out=str(p)), 2, ("in.csv", "is the input")),
    # A string column of bytes that are not UTF-8: Python's decoding raised a traceback.
    Case("predict-text-not-utf8", lambda e: predict(e, latin1_in("text")(e)), 2, ("latin1.parquet", "column 'text'", "not UTF-8", '"Caf\\xe9 cr\\xe8me"')),
    Case("explain-text-not-utf8", lambda e: explain(e, latin1_in("text")(e)), 2, ("latin1.parquet", "column 'text'", "not UTF-8")),
    Case("evaluate-label-not-utf8", lambda e: evaluate(e, latin1_in("label")(e)), 2, ("latin1.parquet", "column 'label'", "not UTF-8")),
    Case("train-label-not-utf8", lambda e: train(e, latin1_in("label")(e)), 2, ("latin1.parquet", "column 'label'", "not UTF-8", "Latin-1")),
    # A name the file system refuses: the folder's own name fits, the lock beside it did not.
    Case("train-output-name-too-long-for-its-lock", lambda e: train(e, e.data / "train.csv", out="m" * 250), 2, ("m" * 250, "too long", "shorten it")),
    Case("predict-output-name-too-long", lambda e: predict(e, csv_with_text(e), out="p" * 260 + ".parquet"), 2, ("p" * 260, "too long", "shorten it")),
    # A mapping as a document's labels: trained on as the label "{'food': True, ...}" once the
    # separator it was refused for was changed.
    Case("train-multi-label-cell-is-a-mapping", lambda e: train(e, e.file("obj.jsonl", "".join(json.dumps({"text": "Good food.", "labels": ["food"] if i != 3 else {"food": True}}) + "\n" for i in range(30))), "--multi-label", "--label-column", "labels"), 2, ("obj.jsonl", "row 4 (iloc 3)", "holds a mapping", "'labels'")),
    # '-' is not stdout: it was "name it *.parquet" / "name it *.csv".
    Case("predict-output-is-stdout-dash", lambda e: predict(e, csv_with_text(e), out="-"), 2, ("-", "not stdout")),
    Case("explain-output-is-stdout-dash", lambda e: explain(e, csv_with_text(e), out="-"), 2, ("-", "not stdout")),
    # The name is checked before --force is asked for: it said "pass --force", then "name it *.parquet".
    Case("predict-existing-output-not-parquet", lambda e: existing(e, "pred.csv") and predict(e, csv_with_text(e), out="pred.csv"), 2, ("pred.csv", "name it *.parquet")),
    Case("evaluate-output-not-json", lambda e: evaluate(e, e.data / "test.parquet", "-o", str(e.out / "metrics.csv")), 2, ("metrics.csv", "*.json")),
    Case("predict-output-not-parquet", lambda e: predict(e, csv_with_text(e), out="pred.csv"), 2, ("pred.csv", ".parquet")),
    # -- flags of predict / explain / evaluate
    Case("predict-top-k-zero", lambda e: predict(e, csv_with_text(e), "--top-k", "0"), 2, ("--top-k 0",)),
    Case("explain-limit-zero", lambda e: explain(e, csv_with_text(e), "--limit", "0"), 2, ("--limit 0",)),
    Case("predict-id-column-missing", lambda e: predict(e, csv_with_text(e), "--id-column", "doc"), 2, ("in.csv", "'doc'", "--id-column")),
    Case("predict-keep-columns-missing", lambda e: predict(e, csv_with_text(e), "--keep-columns", "label,nope"), 2, ("in.csv", "'nope'", "--keep-columns")),
    Case("explain-label-column-missing", lambda e: explain(e, csv_with_text(e), "--label-column", "gold"), 2, ("in.csv", "'gold'", "--label-column")),
    Case("predict-text-column-flag-missing", lambda e: predict(e, csv_with_text(e), "--text-column", "body"), 2, ("in.csv", "'body'", "--text-column")),
    Case("predict-device-not-a-device", lambda e: predict(e, csv_with_text(e), "--device", "banana"), 2, ("--device banana",)),
    Case("predict-device-cuda-without-gpu", lambda e: predict(e, csv_with_text(e), "--device", "cuda"), 2, ("cuda",),
         marks=(NO_CUDA,)),
    # -- train configuration
    Case("train-config-unknown-preset", lambda e: train(e, e.data / "train.csv", "--config", "nosuch"), 2, ("'nosuch'", "yelp", ".yaml")),
    Case("train-config-file-missing", lambda e: train(e, e.data / "train.csv", "--config", str(e.root / "nope.yaml")), 2, ("nope.yaml", "not found")),
    Case("train-config-yaml-invalid", lambda e: train(e, e.data / "train.csv", "--config", str(e.file("bad.yaml", "model: [embed_dim: 3\n"))), 2, ("bad.yaml", "YAML")),
    Case("train-config-yaml-duplicate-key", lambda e: train(e, e.data / "train.csv", "--config", str(e.file("my.yaml", "train:\n  lr: 0.5\n  lr: 0.002\n"))), 2, ("my.yaml", "key 'lr' given twice", "line 3")),
    # --force replaced the teacher with its student.
    Case("train-teacher-is-the-output", lambda e: shutil.copytree(e.model, e.out / "model") and train(e, e.data / "train.csv", "--teacher", str(e.out / "model"), "--force"), 2, ("model", "is the --teacher", "another directory")),
    Case("train-config-yaml-unknown-key", lambda e: train(e, e.data / "train.csv", "--config", str(e.file("my.yaml", "model:\n  embed_size: 64\n"))), 2, ("model.embed_size", "embed_dim")),
    # Lightning raises TypeError for these on the CPU: a traceback.
    # Said what to do: the message ended at the list of labels.
    Case("train-valid-label-unseen-in-training", lambda e: train(e, e.data / "train.csv", "--valid", str(e.file("v.csv", "text,label\nSo so.,neutral\n"))), 2, ("v.csv", "'neutral'", "column 'label'", "drop those valid rows")),
    Case("train-class-weights-label-unknown", lambda e: train(e, e.data / "train.csv", "--class-weights", str(e.file("w.json", '{"mixd": 3}'))), 2, ("--class-weights", "'mixd'", "correct or remove it")),
    # Waited for the other nodes for ever, and ignored SIGTERM meanwhile.
    Case("train-num-nodes-without-a-cluster", lambda e: train(e, e.data / "train.csv", "--num-nodes", "2"), 2, ("--num-nodes 2", "MASTER_ADDR")),
    # Lightning ran bf16-mixed instead, with a warning, and config.yaml kept 16-mixed.
    Case("train-precision-16-on-the-cpu", lambda e: train(e, e.data / "train.csv", "--precision", "16-mixed", "--accelerator", "cpu"), 2, ("--precision 16-mixed", "bf16-mixed")),
    Case("train-devices-negative", lambda e: train(e, e.data / "train.csv", "--devices", "-1"), 2, ("devices", "int > 0")),
    # NumPy's seeds are 32-bit: a traceback from seed_everything.
    Case("train-seed-too-large", lambda e: train(e, e.data / "train.csv", "--seed", "99999999999"), 2, ("train.seed", "4294967295")),
    # Ignored: the model trained from random vectors while its config named the file.
    Case("train-embeddings-file-without-file-source", lambda e: train(e, e.data / "train.csv", "--set", f"train.embeddings_file={e.file('v.vec', 'good 0.1 0.2')}"), 2, ("train.embeddings_file", "--embeddings PATH")),
    Case("train-config-yaml-unknown-section", lambda e: train(e, e.data / "train.csv", "--config", str(e.file("my.yaml", "optim:\n  lr: 0.1\n"))), 2, ("my.yaml", "'optim'")),
    # A section that is no mapping was "unknown section 'model' (sections: data, model, train)".
    Case("train-config-yaml-section-not-a-mapping", lambda e: train(e, e.data / "train.csv", "--config", str(e.file("my.yaml", "model: 3\n"))), 2, ("my.yaml", "section 'model' is 3, not a mapping")),
    # Where the YAML breaks: PyYAML's line and column were cut from the message.
    Case("train-config-yaml-invalid-says-where", lambda e: train(e, e.data / "train.csv", "--config", str(e.file("bad.yaml", "train:\n  lr: [0.1\n"))), 2, ("bad.yaml", "at line 2, column 7", "expected ',' or ']'")),
    # PowerShell 5's `>` writes UTF-16; a Latin-1 accent in a comment: UnicodeDecodeError tracebacks.
    Case("train-config-yaml-utf16", lambda e: train(e, e.data / "train.csv", "--config", str(e.file("ps.yaml", "model:\n  dropout: 0.3\n".encode("utf-16")))), 2, ("ps.yaml", "not UTF-8", "save it as UTF-8")),
    Case("train-class-weights-latin1", lambda e: train(e, e.data / "train.csv", "--class-weights", str(e.file("w.yaml", "# r\xe9glages\npos: 2\n".encode("latin-1")))), 2, ("w.yaml", "not UTF-8", "save it as UTF-8")),
    Case("train-set-unknown-key", lambda e: train(e, e.data / "train.csv", "--set", "train.epochs=3"), 2, ("train.epochs", "max_epochs")),
    Case("train-set-negative-size", lambda e: train(e, e.data / "train.csv", "--set", "model.embed_dim=-5"), 2, ("model.embed_dim", "-5", "> 0")),
    Case("train-set-wrong-type", lambda e: train(e, e.data / "train.csv", "--set", "data.max_words=abc"), 2, ("data.max_words", "int", "abc")),
    Case("train-set-unknown-doc-pooling", lambda e: train(e, e.data / "train.csv", "--set", "model.doc_pooling=max"), 2, ("model.doc_pooling", "'max'", "sentences")),
    Case("train-set-doc-pooling-on-flat", lambda e: train(e, e.data / "train.csv", "--set", "model.architecture=flat", "--set", "model.doc_pooling=sentences"), 2, ("model.doc_pooling", "flat")),
    Case("train-set-without-equals", lambda e: train(e, e.data / "train.csv", "--set", "model.dropout"), 2, ("model.dropout", "KEY=VALUE")),
    Case("train-valid-fraction-out-of-range", lambda e: train(e, e.data / "train.csv", "--valid-fraction", "1.5"), 2, ("data.valid_fraction", "1.5")),
    Case("train-accelerator-unknown", lambda e: train(e, e.data / "train.csv", "--accelerator", "banana"), 2, ("banana", "accelerator"),),
    # Refused before the data is read and tokenized (minutes on millions of rows), so one line.
    Case("train-accelerator-absent", lambda e: train(e, e.data / "train.csv", "--accelerator", "gpu"), 2, ("gpu",),
         marks=(NO_CUDA,)),
    Case("train-precision-unknown", lambda e: train(e, e.data / "train.csv", "--precision", "99"), 2, ("99", "precision"),),
    # -- multi-label
    Case("train-multi-label-no-labels-at-all", lambda e: train(e, e.table("none.csv", e.reviews().assign(label="")), "--multi-label"), 2, ("none.csv", "no labels", "'label'")),
    Case("train-label-separator-empty", lambda e: train(e, e.data / "train.csv", "--multi-label", "--label-separator", ""), 2, ("data.label_separator",)),
    # -- explain's other outputs
    Case("explain-split-without-split-column", lambda e: explain(e, e.data / "test.parquet", "--split", "test"), 2, ("test.parquet", "--split test", "'split'")),
    Case("explain-output-not-csv", lambda e: explain(e, csv_with_text(e), out="att.parquet"), 2, ("att.parquet", ".csv")),
    Case("explain-csv-and-html-same-file", lambda e: explain(e, csv_with_text(e), "--html", str(e.out / "att.csv")), 2, ("att.csv", "--html")),
    Case("explain-faithfulness-output-exists", lambda e: existing(e, "f.json") and ["explain", str(e.model), str(e.data / "test.parquet"), "--faithfulness", str(e.out / "f.json")], 2, ("f.json", "--force")),
    # --threshold changes the labels of the CSV and report only: alone with --faithfulness it was
    # taken and silently did nothing (the figures follow each document's most probable label).
    Case("explain-threshold-with-faithfulness-only", lambda e: ["explain", str(e.model), str(e.data / "test.parquet"), "--faithfulness", str(e.out / "f.json"), "--threshold", "0.9"], 2, ("--threshold 0.9", "--faithfulness", "most probable label")),
    Case("explain-html-output-parent-is-a-file", lambda e: existing(e, "day") and ["explain", str(e.model), str(csv_with_text(e)), "--html", str(e.out / "day" / "r.html")], 2, ("day", "not a directory")),
    # -- click's own usage errors (multi-line, exit 2)
    Case("predict-missing-output-option", lambda e: ["predict", str(e.model), str(csv_with_text(e))], 2, usage=True),
    Case("train-missing-data-argument", lambda e: ["train", "-o", str(e.out / "model")], 2, usage=True),
    Case("predict-threshold-without-top-k", lambda e: predict(e, csv_with_text(e), "--threshold", "0.9"), 2, ("--threshold 0.9", "--top-k")),
    Case("predict-threshold-above-one", lambda e: predict(e, csv_with_text(e), "--threshold", "1.5"), 2, usage=True),
    Case("evaluate-batch-size-zero", lambda e: evaluate(e, e.data / "test.parquet", "--batch-size", "0"), 2, usage=True),
]
BY_ID = {case.id: case for case in CASES}
assert len(BY_ID) == len(CASES), "case ids must be unique"


# --- running and checking ----------------------------------------------------------------------


@dataclass
class Outcome:
    code: int
    stdout: str
    stderr: str
    crash: str = ""  # the traceback of an exception that escaped the CLI, if any


def run_in_process(args: list[str]) -> Outcome:
    result = CliRunner().invoke(app, args)
    crash = ""
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        crash = "".join(traceback.format_exception(*result.exc_info))
    return Outcome(result.exit_code, result.stdout, result.stderr, crash)


def run_subprocess(args: list[str], cwd: Path) -> Outcome:
    proc = subprocess.run(
        [sys.executable, "-m", "hanclf", *args], cwd=cwd, capture_output=True, text=True,
        timeout=300, env={**os.environ, "COLUMNS": "120"},
    )
    return Outcome(proc.returncode, proc.stdout, proc.stderr)


def snapshot(directory: Path) -> dict[str, bytes | None]:
    """Every path under `directory` with its bytes (None for a directory)."""
    return {
        p.relative_to(directory).as_posix(): p.read_bytes() if p.is_file() and not p.is_symlink() else None
        for p in sorted(directory.rglob("*"))
    }


def make_env(tmp_path: Path, data_dir: Path, model_dir: Path) -> Env:
    (tmp_path / "in").mkdir()
    (tmp_path / "out").mkdir()
    return Env(tmp_path / "in", tmp_path / "out", data_dir, model_dir)


def check_case(case: Case, env: Env, run: Callable[[list[str]], Outcome]) -> None:
    args = case.build(env)
    before = snapshot(env.out)
    outcome = run(args)
    shown = f"\n$ hanclf {' '.join(args)}\nexit {outcome.code}\nstderr:\n{outcome.stderr}\nstdout:\n{outcome.stdout}\n{outcome.crash}"

    assert not outcome.crash, f"an exception escaped the CLI:{shown}"
    assert "Traceback" not in outcome.stdout + outcome.stderr, f"traceback printed:{shown}"
    assert outcome.code == case.code, f"exit code {outcome.code}, expected {case.code}:{shown}"
    if not case.usage:
        lines = [line for line in outcome.stderr.splitlines() if line.strip()]
        assert len(lines) == 1, f"expected one line on stderr:{shown}"
        assert lines[0].startswith("error: "), f"the line must start with 'error: ':{shown}"
        for word in case.mentions:
            assert word in lines[0], f"the message does not mention {word!r}:{shown}"
    # No output, no temp file beside it, and an existing output byte for byte as it was.
    assert snapshot(env.out) == before, f"the output directory changed: {sorted(snapshot(env.out))}{shown}"
    for name in case.absent:
        assert not (env.root / name).exists(), f"{name} was created: the file was unpickled!{shown}"


@pytest.mark.parametrize("case", [case.param() for case in CASES])
def test_error(case: Case, tmp_path, data_dir, model_dir) -> None:
    check_case(case, make_env(tmp_path, data_dir, model_dir), run_in_process)


SUBPROCESS_CASES = ["predict-corrupt-parquet", "predict-model-pickle-as-weights", "train-set-unknown-key"]


@pytest.mark.parametrize("case", [BY_ID[i].param() for i in SUBPROCESS_CASES])
def test_error_through_entry_point(case: Case, tmp_path, data_dir, model_dir) -> None:
    """`python -m hanclf` (the installed entry point), not just the Typer app in-process."""
    check_case(case, make_env(tmp_path, data_dir, model_dir), lambda args: run_subprocess(args, tmp_path))


def test_pickle_payload_is_live(tmp_path) -> None:
    """The pickle cases prove something only if unpickling their file really runs code."""
    marker = tmp_path / "marker"
    pickle.loads(pickle.dumps(Payload(marker)))
    assert marker.exists()


# --- --force replaces an existing output --------------------------------------------------------

TINY = ["--set", "model.embed_dim=8", "--set", "model.word_hidden=4", "--set", "model.sent_hidden=4",
        "--set", "model.word_att_dim=4", "--set", "model.sent_att_dim=4", "--accelerator", "cpu"]

FORCE_CASES = {
    "predict": ("pred.parquet", lambda e: predict(e, csv_with_text(e), "--force")),
    "explain": ("att.csv", lambda e: explain(e, csv_with_text(e), "--force")),
    "evaluate": ("metrics.json", lambda e: evaluate(e, e.data / "test.parquet", "-o", str(e.out / "metrics.json"), "--force")),
    "train": ("model", lambda e: train(e, e.data / "train.csv", *TINY, "--force")),
}


@pytest.mark.parametrize("command", list(FORCE_CASES))
def test_force_replaces_existing_output(command: str, tmp_path, data_dir, model_dir) -> None:
    env = make_env(tmp_path, data_dir, model_dir)
    name, build = FORCE_CASES[command]
    old = existing(env, name)
    if command == "train":  # a file browser's, not the user's work: no reason to refuse
        (old / ".DS_Store").write_text("finder")
    outcome = run_in_process(build(env))
    assert outcome.code == 0 and not outcome.crash, (outcome.stderr, outcome.crash)
    assert sorted(p.name for p in env.out.iterdir()) == [name], "temp files left beside the output"
    if command == "train":
        assert (old / "model.safetensors").read_bytes() != b"an earlier model\n"
    else:
        assert old.read_bytes() != b"an earlier output\n"


def test_output_directory_not_writable(tmp_path, data_dir, model_dir, monkeypatch) -> None:
    """A read-only output directory: refused before any work. Root may write anywhere, so as root
    the directory's refusal is simulated (os.access answers what it would for another user)."""
    env = make_env(tmp_path, data_dir, model_dir)
    locked = env.out / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    if os.geteuid() == 0:
        real_access = os.access
        monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == locked else real_access(p, mode))
    # train made its folders and its lock file beside the output before it checked (a
    # PermissionError's traceback, not run as root; as root, a model in locked/new/).
    for args in (predict(env, csv_with_text(env), out="locked/pred.parquet"),
                 explain(env, csv_with_text(env, "in2.csv"), out="locked/att.csv"),
                 train(env, env.data / "train.csv", out="locked/model"),
                 train(env, env.data / "train.csv", out="locked/new/model")):
        outcome = run_in_process(args)
        assert outcome.code == 2 and not outcome.crash, outcome
        assert "locked" in outcome.stderr and "not writable" in outcome.stderr
    assert list(locked.iterdir()) == []
    locked.chmod(0o755)


def test_gpu_out_of_memory_is_one_line_naming_what_to_change(tmp_path, data_dir, model_dir, monkeypatch) -> None:
    """torch's CUDA out-of-memory error (raised here in place of a GPU's) becomes one line with
    the flags that help, and no partial output is left."""
    from hanclf.predict import Predictor

    def out_of_memory(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(Predictor, "predict_table", out_of_memory)
    env = make_env(tmp_path, data_dir, model_dir)
    outcome = run_in_process(predict(env, csv_with_text(env), "--batch-size", "512", "--devices", "1"))
    assert outcome.code == 1 and not outcome.crash, outcome
    assert outcome.stderr.strip() == ("error: the GPU ran out of memory at batches of up to 512 "
                                      "documents; try --batch-size 128")
    assert list(env.out.iterdir()) == []


@pytest.mark.parametrize("command", ["predict", "explain"])
def test_a_full_disk_is_one_line_and_leaves_nothing(command: str, tmp_path, data_dir, model_dir, monkeypatch) -> None:
    env = make_env(tmp_path, data_dir, model_dir)
    import hanclf.predict

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    # Where each command writes: a Parquet row group, a CSV row.
    monkeypatch.setattr(hanclf.predict, "_write", full)
    monkeypatch.setattr("hanclf.explain.token_rows", full)
    args = (predict if command == "predict" else explain)(env, csv_with_text(env))
    outcome = run_in_process(args)
    assert (outcome.code, outcome.crash) == (1, ""), outcome
    lines = [line for line in outcome.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: no space left on the device"), outcome.stderr
    assert list(env.out.iterdir()) == []


def test_force_replaces_a_model_beside_file_browser_clutter(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    for name in (*REQUIRED, ".DS_Store", "._model.safetensors"):
        (model / name).write_text("x")
    (model / ".ipynb_checkpoints").mkdir()
    _check_model_output(model, force=True)  # nothing of the user's to lose
    (model / ".gitignore").write_text("*")
    with pytest.raises(UsageError, match=r"\.gitignore"):
        _check_model_output(model, force=True)


@pytest.mark.parametrize("out", ["", "."], ids=["empty", "dot"])
def test_train_into_the_current_directory_is_one_line(tmp_path, monkeypatch, out):
    # An unset $OUT in `-o "$OUT"`: a StopIteration traceback (Path(".") has no parents).
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["train", str(SAMPLE_DATA / "train.csv"), "-o", out, "--force"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    if out:
        assert result.output.strip() == "error: .: holds the current directory; name another directory to write"
    else:  # refused as a path, as every empty path argument is
        assert "Invalid value for '--output' / '-o': an empty path (an unset shell variable?)" in result.output
