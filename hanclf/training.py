"""`train`: build the DataModule and the LightningModule from a config, let the Trainer run the
loop, keep the epoch with the best validation score (train.select_on), and save it as a model
directory.

`train` checks the inputs and the output and decides whether the run starts or resumes (the work
directory and --resume are hanclf.resume's); `_train` is the run itself, in every process of a
distributed run, one short function per step. Below them: the notes on the training data that
the user reads before the first epoch, and what keeps Lightning quiet and the caller's state,
signals and exit codes as they were."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import random
import shutil
import signal
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint, RichProgressBar
from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.utilities.exceptions import MisconfigurationException

from hanclf import __version__
from hanclf.artifact import (
    DATA_DIGEST, HISTORY, MODEL_FILES, Artifact, load_checkpoint, missing_files, save,
)
from hanclf.config import Config, DataConfig, TrainConfig, default_config, load_config
from hanclf.data import UNREAD_NOTE_SHARE
from hanclf.datamodule import HANDataModule
from hanclf.embeddings import initial_embeddings, require_gensim
from hanclf.errors import UsageError
from hanclf.io import (
    PROGRESS_LOG_SECONDS, as_path, atomic_output, bar_on_stderr, check_input, check_output, check_writable,
    created_parents, same_file, time_left, to_stderr,
)
from hanclf.metrics import calibration_error, describe, fit_temperature, log_loss, tune_thresholds
from hanclf.model import PAD, HANConfig, members
from hanclf.module import HANClassifier
from hanclf.resume import (
    LAST_CHECKPOINT, CheckpointsBeside, check_same_data, checkpoint_to_resume, data_digest, finished,
    finished_metrics, one_training_at_a_time, resumed_config, run_history, start_work_dir,
    why_unreadable, with_absolute_paths, work_dir,
)
from hanclf.vocab import Labels
from hanclf.workers import threads_within_quota

# The figure HANClassifier logs for each train.select_on: early stopping and the best checkpoint
# watch it. val_score is accuracy, or micro-F1 for a multi-label model.
MONITORS = {"accuracy": "val_score", "macro_f1": "val_macro_f1"}


def train(
    data: str | Path,
    output: str | Path,
    config: Config | str | Path | None = None,
    valid: str | Path | None = None,
    force: bool = False,
    resume: bool = False,
    progress: bool | None = None,
    log: Callable[[str], None] = to_stderr,
) -> dict[str, Any] | None:
    """Train a HAN on `data` (and `valid`), write the model directory `output`, return its
    metrics (the same dict as metrics.json); None in the extra processes of a distributed run.
    `config`: from load_config (a preset or YAML file, and overrides), or the name of a preset
    or YAML file; None for the defaults.

    Checkpoints of every epoch are kept in `work_dir(output)` until the model is written;
    `resume=True` continues an interrupted run from its last completed epoch, with its saved
    config (a `config` given must equal it); where there is none, training starts from the
    beginning, and where the run finished (`output` holds its model), nothing is done and the
    model's metrics are returned. `progress`: a progress bar (None: where stderr is a terminal);
    `log` gets a line per epoch, and where no bar shows one on the epoch's steps every minute
    (default: stderr; `lambda message: None` for none).
    """
    data, output = as_path(data, "data", data=True), as_path(output, "output")
    valid = as_path(valid, "valid", data=True, optional=True)
    if isinstance(config, (str, os.PathLike)):  # train(data, out, "yelp"), as --config yelp
        config = load_config(str(config))
    # The settings the caller gave, if any: --resume refuses those that differ from the run's.
    given = None if config is None else with_absolute_paths(config)
    config = given or default_config()
    check_input(data)
    if valid is not None:
        check_input(valid)
    if config.train.embeddings == "word2vec":
        require_gensim()
    check_cluster(config.train.num_nodes)
    # The first process has checked the output and made `work` for the others.
    if distributed_worker(config.train.num_nodes):
        if resume and not force and finished(output):  # the first process trains nothing either
            return None
        work = work_dir(output)
        # The first process started afresh where there was no checkpoint to resume from, or
        # one that could not be read.
        last = work / LAST_CHECKPOINT
        resume_from = last if resume and last.is_file() and why_unreadable(last) is None else None
        if resume_from is not None:
            config = resumed_config(work, given)
        with threads_within_quota():
            _train(data, output, config, valid, work, resume_from,
                   force, progress=False, log=lambda message: None, primary=False)
        return None
    # Before the folders and the lock file beside the output are made: a PermissionError's
    # traceback otherwise.
    check_writable(output)
    # Like spaCy and Lightning, a new runs/a/b is fine; the folders go again if training fails.
    with created_parents(output), one_training_at_a_time(output):
        if resume and not force and finished(output):
            return finished_metrics(output, data, valid, given, log)
        _check_model_output(output, force, config.train.teacher)
        work = work_dir(output)
        resume_from = checkpoint_to_resume(work, resume, force, log)
        if resume_from is not None:
            config = resumed_config(work, given)
            log(f"resuming from {resume_from}")
        if progress is None:
            progress = bar_on_stderr()
        with _caller_state_kept(), threads_within_quota():
            metrics = _train(data, output, config, valid, work, resume_from, force, progress, log)
        shutil.rmtree(work)
        return metrics


def _check_model_output(output: Path, force: bool, teacher: str | None = None) -> None:
    """Refuse an `output` that the model may not replace: an existing one without `force`, the
    `teacher` it learns from, a folder that holds no model, or a model directory that holds the
    user's files too."""
    check_output(output, force, directory=True)
    if teacher is not None and output.exists() and same_file(output, Path(teacher)):
        # --force replaced the teacher with its student, whose config.yaml named itself.
        raise UsageError(f"{output}: is the --teacher; write the student to another directory")
    if output.is_dir() and any(output.iterdir()) and missing_files(output):
        raise UsageError(f"{output}: holds no hanclf model, and --force replaces only a model; "
                         "name another directory")
    others = sorted(p.name for p in output.iterdir()
                    if p.name not in MODEL_FILES and not _clutter(p.name)) if output.is_dir() else []
    if others:
        raise UsageError(f"{output}: holds files besides the model's ({', '.join(others[:5])}"
                         f"{', ...' if len(others) > 5 else ''}), which --force would delete "
                         "with it; move them, or name another directory")


def _clutter(name: str) -> bool:
    """A file browser's or notebook's own file, not the user's work. Any other hidden file
    (.git, .env) is the user's and blocks --force."""
    return name in (".DS_Store", ".ipynb_checkpoints") or name.startswith("._")


# Set on every node by the launchers Lightning reads (torchrun, SLURM, LSF, MPI), or by hand.
CLUSTER_VARIABLES = ("MASTER_ADDR", "TORCHELASTIC_RUN_ID", "SLURM_NTASKS", "LSB_JOBID", "OMPI_COMM_WORLD_SIZE")


def check_cluster(num_nodes: int) -> None:
    """Refuse several nodes where nothing says where the others are: the process waited for
    them for ever, deaf to Ctrl-C and SIGTERM."""
    if num_nodes > 1 and not any(os.environ.get(name) for name in CLUSTER_VARIABLES):
        raise UsageError(f"--num-nodes {num_nodes}: MASTER_ADDR is not set, so this machine would wait for "
                         "the others for ever; start the command on every machine with MASTER_ADDR, "
                         "MASTER_PORT and NODE_RANK set (or under torchrun or SLURM), or train on one node")


def distributed_worker(num_nodes: int) -> bool:
    """True in the extra processes of a distributed run (started by Lightning's DDP launcher or
    torchrun, which set WORLD_SIZE, or on another machine of a --num-nodes run): they train, and
    leave every file to the first process."""
    ranks = {name: os.environ[name] for name in ("RANK", "LOCAL_RANK", "NODE_RANK")
             if os.environ.get(name, "0").strip() not in ("", "0")}
    world_size = os.environ.get("WORLD_SIZE", "").strip()
    if ranks and not (world_size.isdigit() and int(world_size) > 1) and num_nodes <= 1:
        # Lightning would take this process for another's helper too, and log nothing: the
        # run exited 0 without a model (a pod template's stray RANK=1).
        setting = ", ".join(f"{name}={value}" for name, value in ranks.items())
        raise UsageError(f"{setting} is set, but this is no distributed run (WORLD_SIZE is not a number "
                         "above 1, --num-nodes is 1): unset it, or start the run with torchrun or --strategy ddp")
    return bool(ranks)


def _train(
    data: Path,
    output: Path,
    config: Config,
    valid: Path | None,
    work: Path,
    resume_from: Path | None,
    force: bool,
    progress: bool,
    log: Callable[[str], None],
    primary: bool = True,
) -> dict[str, Any] | None:
    """The run, in each process of a distributed run: only the first (`primary`) writes the work
    directory's files and the model; the others take part in fit and validation."""
    _quiet_lightning()
    t = config.train
    pl.seed_everything(t.seed, workers=True, verbose=False)

    start = time.perf_counter()
    # Before reading and tokenizing, which take minutes on millions of rows: a device that is
    # not there, or a strategy we refuse, fails at once.
    trainer, best_checkpoint, epoch_log = _trainer(t, work, progress, log)
    datamodule, weights = _prepared_data(data, valid, config, str(trainer.strategy.root_device))
    digest = data_digest(datamodule)
    if resume_from is not None:
        # By every process of a distributed run, so that none goes on into fit alone.
        check_same_data(work, digest, data)
    han_config = config.han_config(len(datamodule.vocab), len(datamodule.labels))
    module = _classifier(han_config, t, datamodule, weights, resumed=resume_from is not None, log=log)
    _log_setup(datamodule, config, han_config.members, weights, time.perf_counter() - start, log)

    if primary:
        start_work_dir(work, config, digest, resuming=resume_from is not None)
    _fit(trainer, module, datamodule, t.batch_size, resume_from, work, primary)
    epochs_run = trainer.current_epoch
    history = run_history(work, epochs_run) if primary else None  # before the validation below
    best_epoch = _validate_best(trainer, module, datamodule, Path(best_checkpoint.best_model_path))
    if not primary:  # the first process writes the model
        return None
    labels = datamodule.labels
    calibration = _tune_on_valid(module, labels, t)
    metrics = {
        "valid": module.valid_report,
        "calibration": calibration,
        "best_epoch": best_epoch,
        "epochs_run": epochs_run,
        "train_documents": len(datamodule.train_set),
        "valid_documents": len(datamodule.valid_set),
        "vocab_size": len(datamodule.vocab),
        "class_weights": None if weights is None else dict(zip(labels.names, weights)),
        # This call's: after --resume, not the interrupted call's epochs.
        "train_seconds": round(time.perf_counter() - start, 1),
        "epoch_seconds": epoch_log.seconds,
        "epochs_before_resume": epochs_run - len(epoch_log.seconds),
        # The strategy's device: Lightning has moved the module back to the CPU by now.
        "device": str(trainer.strategy.root_device),
        "processes": trainer.world_size,
        "hanclf_version": __version__,
        "torch_version": torch.__version__,
        "pytorch_lightning_version": pl.__version__,
    }
    with atomic_output(output, force, directory=True) as tmp_out:
        save(tmp_out, Artifact(module.model.cpu(), config, datamodule.vocab, labels, metrics))
        history.to_csv(tmp_out / HISTORY, index=False)
        (tmp_out / DATA_DIGEST).write_text(digest, encoding="utf-8")
    return metrics


def _trainer(
    t: TrainConfig, work: Path, progress: bool, log: Callable[[str], None]
) -> tuple[pl.Trainer, ModelCheckpoint, EpochLog]:
    """The Trainer of a run, with the callbacks whose state the run reads afterwards: the
    checkpoint of its best epoch and its epochs' log."""
    gpu = torch.cuda.is_available() or torch.backends.mps.is_available()
    if t.precision in ("16-mixed", "16") and (t.accelerator == "cpu" or t.accelerator == "auto" and not gpu):
        # Lightning trains bf16-mixed instead, with a warning, while config.yaml said 16-mixed.
        raise UsageError(f"--precision {t.precision}: float16 needs a GPU, and this run is on the CPU; "
                         "pass --precision bf16-mixed (or 32-true) there")
    monitor = MONITORS[t.select_on]
    best_checkpoint = ModelCheckpoint(
        dirpath=work, filename="best", monitor=monitor, mode="max", enable_version_counter=False,
    )
    # Every epoch's, for --resume (LAST_CHECKPOINT): Lightning's save_last writes only when the
    # best one changes.
    last_checkpoint = ModelCheckpoint(dirpath=work, filename="last", enable_version_counter=False)
    epoch_log = EpochLog(log, steps_logged=not progress)
    callbacks: list[pl.Callback] = [
        best_checkpoint,
        last_checkpoint,
        EarlyStopping(monitor=monitor, mode="max", patience=t.patience),
        epoch_log,
        CallersSigterm(),
    ]
    if progress:
        callbacks.append(RichProgressBar(console_kwargs={"stderr": True}))
    try:
        trainer = pl.Trainer(
            accelerator=t.accelerator,
            devices=t.devices,
            num_nodes=t.num_nodes,
            strategy=t.strategy,
            # Our batch sampler shards itself across processes (data.BucketBatchSampler).
            use_distributed_sampler=False,
            precision=t.precision,
            max_epochs=t.max_epochs,
            gradient_clip_val=t.grad_clip or None,
            callbacks=callbacks,
            plugins=[CheckpointsBeside()],
            # No name or version: its metrics.csv goes straight into `work` (resume.EPOCHS_LOG).
            logger=CSVLogger(work, name="", version=""),
            enable_progress_bar=progress,
            enable_model_summary=False,
        )
    except (ValueError, TypeError, MisconfigurationException) as e:  # TypeError: --devices -1 on the CPU
        raise UsageError(f"Trainer settings (accelerator, devices, precision): {e}") from None
    # ddp_spawn, and what Lightning picks for several devices in a notebook (ddp_fork), train in
    # processes of Python's multiprocessing: the metrics and thresholds are theirs, and this
    # process, which writes the model, would save none.
    start_method = getattr(trainer.strategy, "_start_method", "popen")
    if trainer.world_size > 1 and start_method != "popen":
        raise UsageError(
            f"training on {trainer.world_size} devices in processes started by {start_method} "
            "(--strategy ddp_spawn, or several devices in a notebook) is not supported: use "
            "`hanclf train --strategy ddp` from a terminal or script, or train on one device"
        )
    return trainer, best_checkpoint, epoch_log


def _prepared_data(
    data: Path, valid: Path | None, config: Config, device: str
) -> tuple[HANDataModule, list[float] | None]:
    """The DataModule, read and encoded (a teacher's probabilities computed on `device`), and
    the loss weight of each label (train.class_weights)."""
    t = config.train
    # Each member of an ensemble draws batches of its own, unless train.shared_batches.
    member_batches = 1 if t.shared_batches else config.model["members"]
    teacher = None if t.teacher is None else Path(t.teacher)
    datamodule = HANDataModule(data, valid, config.data, t.batch_size, t.seed, member_batches,
                               teacher, t.teacher_weight, t.teacher_temperature, device)
    datamodule.read()
    # Before tokenizing, which takes minutes on millions of rows: a weights file naming a label
    # the data lacks fails at once.
    weights = class_weights(t.class_weights, datamodule.labels, datamodule.train_targets, data)
    datamodule.setup("fit")
    return datamodule, weights


def _classifier(
    han_config: HANConfig, t: TrainConfig, datamodule: HANDataModule, weights: list[float] | None,
    resumed: bool, log: Callable[[str], None],
) -> HANClassifier:
    """The LightningModule, its embeddings set as train.embeddings and train.freeze_embeddings say."""
    labels = datamodule.labels
    module = HANClassifier(
        dataclasses.asdict(han_config), dataclasses.asdict(t), labels.names, labels.multi_label, weights
    )
    if not resumed:  # a resumed run's weights come from its checkpoint
        initial = initial_embeddings(t.embeddings, t.embeddings_file, datamodule.vocab,
                                     datamodule.train_set.docs, han_config.embed_dim, t.seed, log)
        if initial is not None:
            for member in members(module.model):
                _set_embeddings(member.embedding.weight, *initial)
    if t.freeze_embeddings:
        for member in members(module.model):
            member.embedding.weight.requires_grad_(False)
    return module


def _log_setup(
    datamodule: HANDataModule, config: Config, ensemble: int, weights: list[float] | None,
    seconds: float, log: Callable[[str], None],
) -> None:
    """What the user reads before the first epoch: the data's size, the class weights, and notes
    on what looks amiss in the labels, the documents' length or the settings."""
    labels, t = datamodule.labels, config.train
    log(
        f"{len(datamodule.train_set)} train / {len(datamodule.valid_set)} valid documents, "
        f"{len(labels)} labels, vocabulary {len(datamodule.vocab)} "
        f"(prepared in {seconds:.1f}s)"
    )
    if weights is not None:
        log("class weights: " + ", ".join(f"{n} {w:.3g}" for n, w in zip(labels.names, weights)))
        if t.select_on == "accuracy" and not labels.multi_label:
            log("note: epochs are kept on valid accuracy, which favours the common classes that "
                "class weights hold back; --set train.select_on=macro_f1 keeps them on macro-F1")
    if t.teacher is not None:
        log(f"teacher {t.teacher}: its probabilities at temperature {t.teacher_temperature:g} are "
            f"{t.teacher_weight:.0%} of each training document's target, the label the rest")
    for note in label_notes(labels, datamodule.train_targets, config.data):
        log(f"note: {note}")
    truncation = datamodule.train_truncation
    if truncation.unread_share >= UNREAD_NOTE_SHARE:
        log(f"note: {truncation.past_the_caps(config.data, 'the training')}; raise them where labels "
            "may depend on what long documents say late")
    if truncation.empty:  # text of whitespace alone is refused; these only look like text
        log(f"note: {truncation.empty} of {truncation.documents} training documents have no words once "
            "cleaned (markup or invisible characters only, e.g. '<br />'): the model learns its biases "
            "from them; drop them if they are mistakes (predict marks such rows empty_text)")
    if ensemble > 1:  # the presets' ensembles surprise users at prediction time
        log(f"note: an ensemble of {ensemble} models (model.members): {ensemble}x one "
            "model's work here and in every prediction; --set model.members=1 trains one")


def _fit(
    trainer: pl.Trainer, module: HANClassifier, datamodule: HANDataModule, batch_size: int,
    resume_from: Path | None, work: Path, primary: bool,
) -> None:
    """Run the epochs (from `resume_from`'s, where given). A run stopped before its first
    checkpoint leaves no work directory: there is nothing --resume could continue from."""
    # A logged row every 50 steps, or per epoch where an epoch has fewer.
    trainer.log_every_n_steps = max(1, min(50, len(datamodule.train_set) // batch_size))
    try:
        with _interrupts_raised():
            trainer.fit(module, datamodule=datamodule, ckpt_path=resume_from)
    except BaseException:
        if primary and not (work / LAST_CHECKPOINT).is_file():
            shutil.rmtree(work, ignore_errors=True)
        raise


def _validate_best(
    trainer: pl.Trainer, module: HANClassifier, datamodule: HANDataModule, best: Path
) -> int:
    """Load the best epoch's weights (checkpoint `best`) into `module` and validate them once
    more, every process taking part, so that the saved metrics are those of the saved model;
    the epoch's number."""
    state, best_epoch = load_checkpoint(best)
    module.model.load_state_dict(state)
    with _interrupts_raised():
        trainer.validate(module, datamodule=datamodule, verbose=False)
    return best_epoch


def _tune_on_valid(module: HANClassifier, labels: Labels, t: TrainConfig) -> dict[str, Any] | None:
    """Fit what the model directory keeps besides the weights to the valid predictions: a
    multi-label model's thresholds (its valid report then at those), a single-label model's
    temperature (train.calibrate). The calibration figures for metrics.json, or None."""
    if labels.multi_label:
        # For the measure epochs were kept on: micro-F1 (select_on accuracy) or macro-F1.
        measure = "micro_f1" if t.select_on == "accuracy" else "macro_f1"
        labels.thresholds = tune_thresholds(module.valid_probs, module.valid_targets, measure)
        module.labels.thresholds = labels.thresholds
        module.valid_report = module.metrics_of(module.valid_probs, module.valid_targets)
    return _calibrate(labels, module.valid_log_probs, module.valid_targets) if t.calibrate else None


def class_weights(
    setting: str | dict[str, float] | None, labels: Labels, targets: list, data: Path
) -> list[float] | None:
    """The loss weight of each label, in id order, for train.class_weights (see TrainConfig)."""
    if setting is None:
        return None
    if isinstance(setting, dict):
        unknown = sorted(set(setting) - labels.index.keys())
        if unknown:
            raise UsageError(f"train.class_weights (--class-weights): label {unknown[0]!r} is not among "
                             f"the labels of {data} ({', '.join(labels.names)}); correct or remove it")
        return [setting.get(name, 1.0) for name in labels.names]
    if labels.multi_label:
        positives = np.stack(targets).sum(axis=0)
        negatives = len(targets) - positives
        # A label on every document has nothing to balance against: weight 1.
        return [float(n / p) if n and p else 1.0 for n, p in zip(negatives, positives)]
    counts = np.bincount(targets, minlength=len(labels))
    return [float(len(targets) / (len(labels) * c)) for c in counts]


RARE_LABEL_ROWS = 2  # a label on this few training rows is worth a look
MISSING_WORDS = {"na", "n/a", "nan", "none", "null", "nil"}  # a missing value, written as a label


def label_notes(labels: Labels, targets: list, data: DataConfig) -> list[str]:
    """What looks wrong in the training labels, which are taken as written: typos, missing
    values written as words, a header row repeated in the data (files joined), and sets of
    labels read as one label."""
    if labels.multi_label:
        counts = np.stack(targets).sum(axis=0).astype(int)
    else:
        counts = np.bincount(targets, minlength=len(labels))
    notes = []
    alike = labels.differing_in_case()
    if alike:
        notes.append("labels that differ only in case are separate labels: "
                     + "; ".join(" / ".join(names) for names in alike))
    rare = [f"{name} ({count})" for name, count in zip(labels.names, counts) if count <= RARE_LABEL_ROWS]
    if rare and len(targets) > 10 * len(labels):
        notes.append(f"labels on {RARE_LABEL_ROWS} training rows or fewer: {', '.join(rare[:10])}"
                     f"{', ...' if len(rare) > 10 else ''}; a typo, or a stray row?")
    missing = [name for name in labels.names if name.casefold() in MISSING_WORDS]
    if missing:
        way_out = ("leave the cell empty for a document with no label" if labels.multi_label
                   else "drop those rows if they have no label")
        notes.append(f"label(s) {', '.join(map(repr, missing))} read as labels, not as missing "
                     f"values; {way_out}")
    if data.label_column in labels.index:
        notes.append(f"label '{data.label_column}' is the label column's own name: a header row "
                     "repeated inside the data (files joined)?")
    by_separator = {sep: [name for name in labels.names if sep in name] for sep in (",", ";", "|")}
    sep, joined = max(by_separator.items(), key=lambda item: len(item[1]))
    if len(joined) >= 2:
        # (Multi-label labels never hold data.label_separator: split on it, or refused.)
        flags = [] if labels.multi_label else ["--multi-label"]
        flags += [f"--label-separator '{sep}'"] if sep != data.label_separator else []
        notes.append(f"{len(joined)} labels hold '{sep}' ({', '.join(map(repr, joined[:3]))}"
                     f"{', ...' if len(joined) > 3 else ''}): if they are sets of labels, train "
                     f"with {' '.join(flags)}")
    return notes


@torch.no_grad()
def _set_embeddings(weight: torch.Tensor, vectors: np.ndarray, ids: np.ndarray) -> None:
    """Start an embedding table from initial_embeddings: the words `ids` at `vectors`."""
    # Words without a given vector start at the given vectors' scale, not nn.Embedding's N(0, 1).
    weight.normal_(0.0, float(vectors.std(dtype=np.float64)))  # float32 squares of 1e20 and up overflow
    weight[PAD] = 0.0
    weight[torch.from_numpy(ids)] = torch.from_numpy(vectors)


def _calibrate(labels: Labels, log_probs: np.ndarray, targets: np.ndarray) -> dict[str, Any] | None:
    """Fit `labels.temperature` (single-label) to the valid log-probabilities; the figures for
    metrics.json, or None where it is not fitted (see metrics.fit_temperature)."""
    temperature = None if labels.multi_label else fit_temperature(log_probs, targets)
    if temperature is None:
        return None
    labels.temperature = temperature
    return {"temperature": round(temperature, 4),
            "valid_log_loss": [round(log_loss(log_probs, targets, t), 4) for t in (1.0, temperature)],
            "valid_calibration_error": [round(calibration_error(log_probs, targets, t), 4)
                                        for t in (1.0, temperature)]}


def _quiet_lightning() -> None:
    """Silence Lightning's logs and warnings that tell a hanclf user nothing."""
    # Lightning's start-up banners and the num_workers hint are noise here: data is encoded in
    # memory up front, so DataLoader workers would only add process start-up time.
    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    # The work directory is ours and holds the run's config (and, on --resume, its checkpoints).
    warnings.filterwarnings("ignore", message=".*exists and is not empty.*")
    # Validation metrics are computed over every process's documents already (module.py), and
    # a small data set has fewer batches than the logging interval: both hints are noise.
    warnings.filterwarnings("ignore", message=".*sync_dist=True.*")
    warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
    logging.getLogger("lightning_fabric").setLevel(logging.WARNING)


@contextlib.contextmanager
def _caller_state_kept() -> Iterator[None]:
    """Training seeds the global random generators (Lightning's seed_everything), sets
    PL_GLOBAL_SEED and PL_SEED_WORKERS, quiets Lightning's loggers and filters some of its
    warnings; afterwards the caller has all of these as before, so that train() in a loop
    (cross-validation, a notebook) leaves the caller's random draws and warnings alone. CUDA's
    generators are given back where CUDA was started before; where training starts it, they
    stay as training left them."""
    generators = random.getstate(), np.random.get_state(), torch.get_rng_state()
    # Only where CUDA is up already: asking for its generators would start it.
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    environment = {name: os.environ.get(name) for name in ("PL_GLOBAL_SEED", "PL_SEED_WORKERS")}
    levels = {name: logging.getLogger(name).level for name in ("pytorch_lightning", "lightning_fabric")}
    try:
        with warnings.catch_warnings():
            yield
    finally:
        random.setstate(generators[0])
        np.random.set_state(generators[1])
        torch.set_rng_state(generators[2])
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)
        for name, value in environment.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


@contextlib.contextmanager
def _interrupts_raised() -> Iterator[None]:
    """Lightning ends fit() and validate() on Ctrl-C or SIGTERM with SystemExit(1): raise the
    KeyboardInterrupt that the CLI reports (exit 130, or 143 for SIGTERM) instead."""
    try:
        yield
    except SystemExit:
        raise KeyboardInterrupt from None


class CallersSigterm(pl.Callback):
    """In a distributed run, SIGTERM goes back to the handler the caller had (the CLI's raises
    KeyboardInterrupt: Lightning then kills the other processes and ends fit). Lightning's own
    handler broadcasts the signal to them, and waits for ever where they are blocked in a
    gradient all-reduce meanwhile: a job stopped with SIGTERM never ended."""

    def __init__(self) -> None:
        self.handler = signal.getsignal(signal.SIGTERM)

    def on_train_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        # After Lightning registered its handler (fit's start); it puts the caller's back at the end.
        if trainer.world_size > 1 and self.handler is not None:
            signal.signal(signal.SIGTERM, self.handler)


class EpochLog(pl.Callback):
    """One line per epoch through `log`: readable in CI logs and files, where bars are not;
    with `steps_logged` (no progress bar), also a line on the epoch's steps every
    PROGRESS_LOG_SECONDS, as a CPU epoch can take an hour. Keeps each epoch's wall seconds (its
    training and validation) in `seconds`: the whole call's time also holds reading, tokenizing
    and start-up, which a GPU epoch can be a fraction of."""

    def __init__(self, log: Callable[[str], None], steps_logged: bool = False) -> None:
        self.write, self.steps_logged = log, steps_logged
        self.seconds: list[float] = []

    def on_fit_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        # The Trainer is made before the data is read: the epochs' clock starts with fit.
        self.started = time.perf_counter()

    def on_train_epoch_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self.epoch_started = self.logged = time.perf_counter()

    def on_train_batch_end(
        self, trainer: pl.Trainer, module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        now = time.perf_counter()
        if not self.steps_logged or now - self.logged < PROGRESS_LOG_SECONDS:
            return
        self.logged = now
        done, steps = batch_idx + 1, trainer.num_training_batches
        left = (steps - done) * (now - self.epoch_started) / done
        loss = trainer.callback_metrics.get("loss")
        self.write(
            f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}: step {done} of {steps}"
            f"{'' if loss is None else f', loss {float(loss):.4f}'}, {time_left(left)} in the epoch"
        )

    def on_train_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self.seconds.append(round(time.perf_counter() - self.epoch_started, 2))
        m = trainer.callback_metrics  # validation has run by now (Lightning 2: end of epoch)
        loss = f"train loss {m['train_loss']:.4f}, " if "train_loss" in m else ""
        self.write(
            f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}: {loss}valid "
            f"{describe(module.valid_report)} ({time.perf_counter() - self.started:.0f}s)"
        )
