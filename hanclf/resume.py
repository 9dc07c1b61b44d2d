"""What `hanclf train --resume` relies on: the work directory a run keeps beside its output,
and the checks that make continuing from it safe.

Until the model directory `runs/m` is written, a run keeps beside it:

    runs/.m.training/              work_dir: removed once the model is in place
        config.yaml                the run's settings; --resume continues with these
        data.sha256                data_digest of what it trains on; --resume refuses other data
        last.ckpt, best.ckpt       the last epoch's checkpoint, and the best one's (train.select_on)
        metrics.csv, hparams.yaml  Lightning's CSVLogger: the epochs of this call
        history_before_resume.csv  the epochs of the calls before it (EARLIER_HISTORY)
    runs/.m.training.lock          one_training_at_a_time: locked while a run writes runs/m

The model directory keeps data.sha256 too, so that a --resume after the run finished can check
its data. What a user can count on (and what --resume does with no interrupted run, or a
finished one) is in the README, "Errors and guarantees"; tests/test_resume.py checks it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import pickle
import shutil
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pandas as pd
import torch
import yaml
from pytorch_lightning.plugins import TorchCheckpointIO

from hanclf.artifact import CONFIG, DATA_DIGEST, METRICS, WEIGHTS, load_checkpoint, missing_files
from hanclf.config import Config, config_from_dict
from hanclf.datamodule import HANDataModule
from hanclf.errors import HanclfError, UsageError
from hanclf.io import cannot_create
from hanclf.metrics import describe

LAST_CHECKPOINT = "last.ckpt"  # in the work directory: ModelCheckpoint(filename="last")


def work_dir(output: Path) -> Path:
    """Where a run keeps its checkpoints until the model directory is written: beside the
    output, so `--resume` finds them after a crash or `kill -9`."""
    return output.parent / f".{output.name}.training"


@contextlib.contextmanager
def one_training_at_a_time(output: Path) -> Iterator[None]:
    """Hold a lock on `output`'s training while it runs: two runs writing one model shared its
    checkpoints and both crashed (and a second run called the first's live checkpoints those of
    an interrupted run). The lock file beside the output goes at the end; one left by a killed
    run is not locked, so it stops nothing."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks here
        yield
        return
    lock = output.parent / f".{output.name}.training.lock"
    try:
        handle = lock.open("w")
    except OSError as e:
        raise cannot_create(output, e) from None
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            # Exit 1, not 2: a Job's replacement pod starting while the old one still stops
            # meets this, and a retry policy takes exit 2 for "the command is wrong".
            raise HanclfError(f"{output}: another `hanclf train` is writing it now; wait for it to "
                              "finish, or name another output") from None
        try:
            yield
        finally:
            lock.unlink(missing_ok=True)
    finally:
        handle.close()


def checkpoint_to_resume(work: Path, resume: bool, force: bool, log: Callable[[str], None]) -> Path | None:
    """`work`'s last checkpoint where `resume` and it loads: the one the run continues from.
    Otherwise None, and `work` is cleared for a run from the start; checkpoints of an
    interrupted run are cleared only with `force` (or `resume`, where they cannot be read)."""
    last = work / LAST_CHECKPOINT
    damage = why_unreadable(last) if resume and last.is_file() else None
    if resume and (not last.is_file() or damage):
        # As Lightning's ckpt_path="last": a job's retries can all pass --resume.
        found = f"{last} cannot be read ({damage})" if damage else f"no {last}"
        log(f"no interrupted run to resume ({found}): training from the start")
        resume = False
        # A run killed in its first epoch left no epoch to continue from, only its settings.
        shutil.rmtree(work, ignore_errors=True)
    if resume:
        return last
    if work.exists():
        if not force and last.is_file():  # without one, there is nothing to lose
            raise UsageError(
                f"{work} holds checkpoints of an interrupted run: pass --resume to continue "
                "it, or --force to start over"
            )
        shutil.rmtree(work)
    return None


def finished(output: Path) -> bool:
    """Whether `output` holds a model and no interrupted run of it (a retry after success). A
    work directory with no checkpoint newer than the model is the finished run's own: a run
    stopped between moving its model into place and removing it leaves one."""
    if not output.is_dir() or missing_files(output):
        return False
    last = work_dir(output) / LAST_CHECKPOINT
    return not last.is_file() or last.stat().st_mtime <= (output / WEIGHTS).stat().st_mtime


def finished_metrics(
    output: Path, data: Path, valid: Path | None, given: Config | None, log: Callable[[str], None]
) -> dict[str, Any]:
    """A retry of a run that finished: as Lightning's ckpt_path="last" after the last epoch,
    nothing is left to do. Settings given must be the model's, and so must the data (models
    written before hanclf kept its digest are not checked): a job that retrains every day with
    --resume would otherwise keep yesterday's model and say it had nothing to do."""
    saved = _saved_config(output / CONFIG, given, refusal=(
        f"{output}: holds a finished model trained with other settings ({output / CONFIG}); --resume "
        "does not retrain it: pass --force to train again with these, or name another directory"))
    digest = output / DATA_DIGEST
    if digest.is_file() and digest.read_text(encoding="utf-8") != _digest_of(data, valid, saved):
        raise UsageError(
            f"{data}: its documents, words or labels differ from those the finished model in "
            f"{output} was trained on; --resume does not retrain it: pass --force to train on "
            "this data, or name another directory"
        )
    shutil.rmtree(work_dir(output), ignore_errors=True)  # what a run stopped at its very end left
    metrics = json.loads((output / METRICS).read_text(encoding="utf-8")) if (output / METRICS).is_file() else {}
    figures = f", valid {describe(metrics['valid'])}" if "valid" in metrics else ""
    log(f"nothing to resume: {output} holds this run's finished model{figures} (--force trains it again)")
    return metrics


def resumed_config(work: Path, given: Config | None) -> Config:
    """The interrupted run's config; a `given` one that differs is refused."""
    return _saved_config(work / CONFIG, given, refusal=(
        f"--resume continues with the settings saved in {work / CONFIG}; give the interrupted "
        "run's settings (its command with --resume added), or none"))


def _saved_config(path: Path, given: Config | None, refusal: str) -> Config:
    """The config a run saved in `path`; a `given` one that differs is refused with `refusal`.
    (Runs interrupted before config.yaml named embeddings files absolutely name theirs
    relatively.)"""
    saved = with_absolute_paths(config_from_dict(yaml.safe_load(path.read_text(encoding="utf-8"))))
    if given is not None and given.to_dict() != saved.to_dict():
        raise UsageError(refusal)
    return saved


def with_absolute_paths(config: Config) -> Config:
    """`config` naming its embeddings file and teacher by absolute paths (`~` expanded): they are
    saved in config.yaml, and a run repeated from another directory must find the same ones."""
    paths = {name: str(Path(os.path.expanduser(getattr(config.train, name))).resolve())
             for name in ("embeddings_file", "teacher") if getattr(config.train, name)}
    return dataclasses.replace(config, train=dataclasses.replace(config.train, **paths)) if paths else config


def why_unreadable(checkpoint: Path) -> str | None:
    """None where `checkpoint` loads; else what is wrong with its content. An error of the
    moment (the disk, memory) is raised instead: the checkpoint may be fine on the next try."""
    try:
        load_checkpoint(checkpoint)
    except (RuntimeError, EOFError, KeyError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile) as e:
        return str(e).splitlines()[0] if str(e) else type(e).__name__
    except FileNotFoundError:  # removed meanwhile (by the first process of a distributed run)
        return "removed"
    except (OSError, MemoryError) as e:
        raise HanclfError(f"{checkpoint}: cannot be read now ({e}); run the command again") from None
    return None


class CheckpointsBeside(TorchCheckpointIO):
    """Each checkpoint written beside its name, then renamed over it. Lightning's own goes
    through a temporary file in TMPDIR (fsspec's), which a pod's small /tmp filled ("no space
    left" with the output's disk empty), and is moved across filesystems as a copy that a kill
    could leave half done, a checkpoint that no --resume could read."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None) -> None:
        path = Path(path)
        partial = path.with_name(f".{path.name}.partial")
        with partial.open("wb") as file:
            writer = _WriteErrorKept(file)
            try:
                torch.save(checkpoint, writer)
            except RuntimeError:
                if writer.error is not None:
                    raise writer.error from None
                raise
        os.replace(partial, path)


class _WriteErrorKept:
    """A file that keeps the OSError of a failed write: torch.save turns a full disk's into a
    RuntimeError ("unexpected pos 13760 vs 13654"), which reached the log as a traceback
    instead of the CLI's line on the disk being full."""

    def __init__(self, file: BinaryIO) -> None:
        self.file = file
        self.error: OSError | None = None

    def write(self, data: bytes) -> int:
        try:
            return self.file.write(data)
        except OSError as e:
            self.error = e
            raise

    def flush(self) -> None:
        self.file.flush()


def data_digest(datamodule: HANDataModule) -> str:
    """A digest of the set-up `datamodule`'s word and label tables (the checkpoints' weights fit
    these only) and of its encoded documents and their labels (the batches to come are drawn
    from these: other data with the same words, e.g. the first half of the file, was resumed on
    silently)."""
    tables = [datamodule.vocab.to_json(), datamodule.labels.to_json()]
    digest = hashlib.sha256(json.dumps(tables, sort_keys=True).encode())
    sets = ((datamodule.train_set, datamodule.train_targets), (datamodule.valid_set, datamodule.valid_targets))
    for dataset, labels in sets:
        for doc in dataset.docs:
            digest.update(doc.ids.tobytes())
            digest.update(doc.lengths.tobytes())
        # The labels, not a teacher's share of the targets (train.teacher): on another device
        # its probabilities differ in the last bits, and the teacher is in the compared config.
        digest.update(np.asarray(labels).tobytes())
    return digest.hexdigest()


def check_same_data(work: Path, digest: str, data: Path) -> None:
    """Refuse to resume the run in `work` on data whose data_digest is not its own. The file is
    absent in runs interrupted before hanclf wrote it."""
    saved = work / DATA_DIGEST
    if saved.is_file() and saved.read_text(encoding="utf-8") != digest:
        raise UsageError(
            f"{data}: its documents, words or labels differ from those of the interrupted run in "
            f"{work}, whose checkpoints were trained on those; resume on the same data, or start "
            "over with --force"
        )


def _digest_of(data: Path, valid: Path | None, config: Config) -> str:
    """data_digest of `data` (and `valid`) read and encoded as a run with `config` reads them."""
    datamodule = HANDataModule(data, valid, config.data, config.train.batch_size, config.train.seed)
    datamodule.setup("fit")
    return data_digest(datamodule)


EPOCHS_LOG = "metrics.csv"  # Lightning's CSVLogger's file in the work directory: this call's epochs
EARLIER_HISTORY = "history_before_resume.csv"  # in the work directory: the epochs of the calls before


def start_work_dir(work: Path, config: Config, digest: str, resuming: bool) -> None:
    """Write what a --resume of this run will need before its first epoch: its settings, its
    data's digest, and (where this call resumes) the epochs of the calls before."""
    work.mkdir(exist_ok=True)
    (work / CONFIG).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False), encoding="utf-8")
    if not resuming:  # a resumed run's processes are reading it
        (work / DATA_DIGEST).write_text(digest, encoding="utf-8")
    else:
        # Lightning's CSV logger deletes its file as it starts: the epochs of the calls
        # before this one are kept in a file of ours first.
        _keep_earlier_history(work / EPOCHS_LOG, work / EARLIER_HISTORY)


def run_history(work: Path, epochs_run: int) -> pd.DataFrame:
    """Every epoch of the run, one row each, from all the calls that ran them: the model's
    history.csv. Read before the validation after fit, which logs a row of its own."""
    # No new file where the interrupted call had run every epoch already.
    earlier, this_call = _read_history(work / EARLIER_HISTORY), _read_history(work / EPOCHS_LOG)
    history = _joined_history(earlier, this_call, epochs_run)
    if history is None:  # every epoch ran before, and a kill emptied their file
        history = pd.DataFrame({"epoch": pd.Series([], dtype="int64")})
    # Lightning writes an epoch's training and validation figures as rows of their own.
    # val_score, early stopping's name for val_acc (val_micro_f1), only repeated it.
    return history.groupby("epoch", as_index=False).first().drop(columns="val_score", errors="ignore")


def _keep_earlier_history(history_path: Path, earlier_path: Path) -> None:
    """Add the epochs logged by the interrupted call (`history_path`) to those of the calls
    before it (`earlier_path`), as one file written whole."""
    joined = _joined_history(_read_history(earlier_path), _read_history(history_path), math.inf)
    if joined is None:
        return
    tmp = earlier_path.with_suffix(".tmp")
    joined.to_csv(tmp, index=False)
    os.replace(tmp, earlier_path)


def _joined_history(
    earlier: pd.DataFrame | None, later: pd.DataFrame | None, until: float
) -> pd.DataFrame | None:
    """`earlier`'s epochs, then `later`'s: an epoch both hold is `later`'s, which ran it again.
    Without `later`, `earlier`'s epochs before `until`."""
    if earlier is None:
        return later
    first_later = until if later is None else later["epoch"].min()
    return pd.concat([earlier[earlier["epoch"] < first_later], later])


def _read_history(path: Path) -> pd.DataFrame | None:
    """A file of logged epochs; None where there is none, it has no row, or a kill left it
    empty or cut short (the epochs are in the checkpoints; only their history is lost)."""
    try:
        frame = pd.read_csv(path) if path.is_file() else None
    except (pd.errors.EmptyDataError, pd.errors.ParserError):
        return None
    return frame if frame is not None and len(frame) and "epoch" in frame else None
