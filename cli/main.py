"""The `hanclf` command line: one thin Typer command per library function.

Each command parses flags, calls hanclf.<module>.<function> and prints; errors of the user's
making are HanclfError and become `error: ...` on stderr with exit code 2 (usage) or 1 (runtime).
Library modules are imported inside the commands so `hanclf --help` does not wait for torch.
"""

from __future__ import annotations

import atexit
import errno
import gc
import os
import signal
import sys
import threading
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, Optional, TypeVar

import rich
import typer
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from hanclf import __version__
from hanclf.errors import HanclfError, HanclfWarning

app = typer.Typer(
    name="hanclf",
    help="Hierarchical Attention Network document classifier: train, predict, explain, evaluate.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
    # A bug's traceback in a log file as Python prints it: rich's box wraps it at 80 columns,
    # splitting the error's own line (which log searches look for).
    pretty_exceptions_enable=sys.stderr.isatty(),
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


class _Stdout(Console):
    """stdout, where a reader that stops early (`| head`) ends the command as it ends other Unix
    tools, exit 141 (SIGPIPE), not rich's 1, which a retry policy reads as a failure."""

    def on_broken_pipe(self) -> None:
        try:
            super().on_broken_pipe()
        except SystemExit:
            raise SystemExit(141) from None


stdout = _Stdout()
# rich's global console, on stderr, is where log lines go (hanclf.io.to_stderr): Lightning's
# progress bar draws on it (and reconfigures it to stderr itself), so they go above the bar;
# written past it by a console of our own, they were drawn over (of train's three epoch lines,
# only "epoc" was left).
rich.reconfigure(stderr=True)
T = TypeVar("T")


def _path(raw: str) -> Path:
    """A path argument or flag: `~` expanded, as the shell does not in --output=~/x or "~/x"
    (pyarrow and Lightning did, and an output went half there, half into a folder named ~); an
    empty one (an unset shell variable) refused, not read as the current folder."""
    if not raw.strip():
        raise typer.BadParameter("an empty path (an unset shell variable?)")
    return Path(os.path.expanduser(raw))  # not Path.expanduser: "~draft.csv" raised (no user "draft.csv")


ModelDir = Annotated[Path, typer.Argument(parser=_path, metavar="MODEL", help="Model directory written by `hanclf train`.")]
TextColumn = Annotated[
    Optional[list[str]],
    typer.Option(metavar="COLUMNS", help="Column holding the text, or several (comma-separated or repeated: title,text) read as one, each part a new sentence [default: the model's]."),
]
Force = Annotated[bool, typer.Option("--force", "-F", help="Overwrite an existing output.")]
Device = Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")]
BatchSize = Annotated[Optional[int], typer.Option(min=1, help="Documents per forward pass [default: 1,024 on a GPU, 64 on the CPU].", show_default=False)]
TOP_SENTENCE_DOCS = 50  # --top-sentences is for reading in a terminal


def _run(action: Callable[[], T], resumable: Path | None = None, written: Sequence[Path] = ()) -> T:
    """Call into the library; turn our errors, Ctrl-C and SIGTERM into a message and an exit
    code. `resumable`: the checkpoint that `--resume` would continue from, if one was left;
    `written`: outputs that earlier calls of the command wrote."""
    try:
        _work_began.set()
        if _stop_pending.is_set():  # a signal came while the command started: see _on_stop_signal
            raise KeyboardInterrupt
        return action()
    except (HanclfError, KeyboardInterrupt) as e:
        # After a SIGTERM to the process group, an error is its workers dying of it too.
        if isinstance(e, HanclfError) and not _terminated.is_set():
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(e.exit_code) from None
        hint = " (the same command with --resume continues)" if resumable and resumable.is_file() else ""
        how, code = _how_stopped()
        kept = f"only {' and '.join(map(str, written))} had been written" if written else "no output was written"
        typer.echo(f"{how}: {kept}{hint}", err=True)
        raise typer.Exit(code) from None
    except OSError as e:  # pyarrow's errors carry the reason in the text only
        if e.errno == errno.ENAMETOOLONG:  # from any look at a path given (exists, stat)
            typer.echo(f"error: {e.filename}: a name in the path is too long for the file system; "
                       "shorten it", err=True)
            raise typer.Exit(2) from None
        if e.errno not in (errno.ENOSPC, errno.EDQUOT) and "No space left on device" not in str(e):
            raise
        typer.echo(f"error: no space left on the device{f' ({e.filename})' if e.filename else ''}; "
                   "free some or write the output elsewhere (nothing was written)", err=True)
        raise typer.Exit(1) from None


# SIGTERM (what `timeout`, Airflow and Kubernetes send) stops a command as Ctrl-C does: the same
# clean-up runs (temporary outputs removed, workers stopped), then exit 143. By default Python
# would die at once, leaving both behind, and as a container's PID 1 it would ignore the signal.
_terminated = threading.Event()
_work_began = threading.Event()  # a command called into the library: outputs may exist
_stop_pending = threading.Event()  # signalled before that: stopped when the work begins


def _how_stopped() -> tuple[str, int]:
    """What stopped the command, as its message says it, and its exit code."""
    return ("terminated (SIGTERM)", 143) if _terminated.is_set() else ("interrupted", 130)


def _on_stop_signal(signum: int, frame: object) -> None:
    """SIGINT and SIGTERM. While a command imports its libraries (seconds, for torch), the stop
    waits for the work to begin (or the command to end): a KeyboardInterrupt raised inside an
    import was swallowed by torch's C import of numpy, or left numpy half-imported, so a job
    stopped as it started ran on to the end (exit 0), or failed with a traceback (exit 1)."""
    if signum == signal.SIGTERM:
        _terminated.set()
    if not _work_began.is_set():
        _stop_pending.set()
        return
    raise KeyboardInterrupt


def _version(value: bool) -> None:
    if value:
        typer.echo(f"hanclf {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        Optional[bool],
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = None,
) -> None:
    warnings.showwarning = _show_warning


_show_other_warning = warnings.showwarning


def _show_warning(message: Warning | str, category: type[Warning], *where: Any, **more: Any) -> None:
    """Our warnings as one line, like our errors; other libraries' as Python shows them."""
    if issubclass(category, HanclfWarning):
        _log(f"warning: {message}")
    else:
        _show_other_warning(message, category, *where, **more)


def _log(message: str) -> None:
    """A line on stderr as written (no markup, no highlighting, one line: for logs and grep)."""
    from hanclf.io import to_stderr  # here: the CLI imports the library's modules when it runs

    to_stderr(message)


def _columns(values: list[str] | None) -> list[str] | None:
    """Column names given comma-separated, repeated, or both; None where none were."""
    names = [name.strip() for value in values or [] for name in value.split(",") if name.strip()]
    return names or None


def _explain_notes(counts: dict[str, int], html: Path | None) -> list[str]:
    """What a reader of explain's outputs should know about them."""
    from hanclf.report import COMFORTABLE_DOCUMENTS

    notes = []
    if counts["cut"]:
        notes.append(f"documents longer than the model reads (data.max_sentences, data.max_words): "
                     f"{counts['cut']} of {counts['documents']}; the rest of each was not seen "
                     "and is not shown")
    if counts["repeated_ids"]:
        notes.append(f"documents with the id of an earlier one: {counts['repeated_ids']}; their "
                     "rows share a doc_id")
    if counts["no_id"]:
        notes.append(f"documents without an id (null or empty): {counts['no_id']}; their rows "
                     "have an empty doc_id")
    if html is not None and counts["documents"] > COMFORTABLE_DOCUMENTS:
        notes.append(f"the HTML report holds {counts['documents']} documents; browsers slow down "
                     f"past about {COMFORTABLE_DOCUMENTS:,}: --limit N keeps the first N")
    return notes


def _devices(value: str | None) -> str | int | None:
    return int(value) if value is not None and value.isdigit() else value


@app.command(epilog="Example: hanclf train reviews.parquet --label-column stars --config yelp -o model")
def train(
    data: Annotated[Path, typer.Argument(parser=_path, metavar="DATA", help="Training data: .csv, .tsv, .parquet, .jsonl, or a folder of Parquet files.")],
    output: Annotated[Path, typer.Option("--output", "-o", parser=_path, help="Model directory to write.")],
    valid: Annotated[
        Optional[Path], typer.Option(parser=_path, help="Validation data [default: the split column, else a random share].")
    ] = None,
    config: Annotated[
        Optional[str], typer.Option("--config", "-c", help="Preset (default, yelp, imdb, amazon) or a YAML file [default: default]. Flags and --set override it.")
    ] = None,
    set_: Annotated[
        Optional[list[str]],
        typer.Option("--set", metavar="KEY=VALUE", help="Override one config key, e.g. --set model.dropout=0.3 (repeatable)."),
    ] = None,
    text_column: Annotated[Optional[list[str]], typer.Option(metavar="COLUMNS", help="Text column, or several (comma-separated or repeated: title,text) read as one, each part a new sentence [default: text, or the preset's].")] = None,
    label_column: Annotated[Optional[str], typer.Option(help="Label column [default: label, or the preset's].")] = None,
    multi_label: Annotated[Optional[bool], typer.Option("--multi-label", help="Each document has a set of labels: a list column, or labels joined by --label-separator.", show_default=False)] = None,
    label_separator: Annotated[Optional[str], typer.Option(help="Separator of multi-label labels in one string [default: ,].")] = None,
    id_column: Annotated[Optional[str], typer.Option(help="Id column; predict and explain then copy it by default ('' for none, over a config's).")] = None,
    valid_fraction: Annotated[Optional[float], typer.Option(help="Share held out for validation when there is no split column or --valid [default: 0.1].")] = None,
    embeddings: Annotated[Optional[str], typer.Option(help="Initial word vectors: random, word2vec (trained on the training text first; needs gensim) or the path of a .vec/GloVe/word2vec text file [default: random, or the preset's].")] = None,
    teacher: Annotated[Optional[Path], typer.Option(parser=_path, help="A trained model (e.g. an ensemble) to distil: each training document's target mixes its label with the teacher's probabilities, softened (--set train.teacher_weight, default 1: the teacher's alone; train.teacher_temperature, default 2).")] = None,
    class_weights: Annotated[Optional[str], typer.Option(help="Loss weight of each class: balanced (for imbalanced classes, as scikit-learn's), none, or a JSON/YAML file of label: weight [default: none, or the preset's].")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Random seed [default: 42].")] = None,
    max_epochs: Annotated[Optional[int], typer.Option(help="Epochs at most (early stopping may end sooner) [default: 10, or the preset's].")] = None,
    accelerator: Annotated[Optional[str], typer.Option(help="Lightning accelerator: auto, cpu, gpu, cuda, mps [default: auto].")] = None,
    devices: Annotated[Optional[str], typer.Option(help="Lightning devices: auto, N or a list [default: auto].")] = None,
    precision: Annotated[Optional[str], typer.Option(help="Lightning precision: 32-true, bf16-mixed, 16-mixed [default: 32-true].")] = None,
    strategy: Annotated[Optional[str], typer.Option(help="Lightning strategy, e.g. ddp (one process per device) [default: auto].")] = None,
    num_nodes: Annotated[Optional[int], typer.Option(help="Machines taking part (with --strategy ddp) [default: 1].")] = None,
    force: Force = False,
    resume: Annotated[bool, typer.Option(help="Continue an interrupted run (crash, kill -9) from its last completed epoch; with none to continue, train from the start, and with the run finished, do nothing (a job's retries can always pass it).")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar (one line per epoch still, and one on the steps every minute, as where stderr is not a terminal).")] = False,
) -> None:
    """Train a HAN and write a self-contained model directory."""
    from hanclf.config import class_weights_option, load_config, parse_override
    from hanclf.metrics import describe
    from hanclf.resume import LAST_CHECKPOINT, finished, work_dir
    from hanclf.training import train as train_model

    def action() -> dict[str, Any]:
        overrides = dict(parse_override(item) for item in set_ or [])
        flags = {
            "data.text_column": _columns(text_column), "data.label_column": label_column,
            "data.id_column": id_column, "data.multi_label": multi_label,
            "data.label_separator": label_separator,
            "data.valid_fraction": valid_fraction, "train.seed": seed,
            "train.max_epochs": max_epochs, "train.accelerator": accelerator,
            "train.devices": _devices(devices), "train.precision": precision,
            "train.strategy": strategy, "train.num_nodes": num_nodes,
            "train.teacher": None if teacher is None else str(teacher),
        }
        if embeddings in ("random", "word2vec"):
            flags["train.embeddings"] = embeddings
        elif embeddings is not None:
            flags.update({"train.embeddings": "file", "train.embeddings_file": embeddings})
        overrides.update({k: v for k, v in flags.items() if v is not None})
        if embeddings in ("random", "word2vec"):  # over a config that names a file, too
            overrides["train.embeddings_file"] = None
        if class_weights is not None:  # after the others: "none" sets null
            overrides["train.class_weights"] = class_weights_option(class_weights)
        # With --resume and no setting given, the interrupted run's saved settings are used.
        resolved = load_config(config, overrides) if config or overrides or not resume else None
        return train_model(
            data, output, resolved, valid=valid, force=force, resume=resume,
            progress=False if quiet else None,  # None: a bar where a person watches (a terminal)
            log=_log,
        )

    trained_before = resume and not force and finished(output)  # train says so
    metrics = _run(action, resumable=work_dir(output) / LAST_CHECKPOINT)
    if metrics is None or trained_before:  # None: an extra process of a distributed run
        return
    resumed = f", resumed after epoch {metrics['epochs_before_resume']}" if metrics["epochs_before_resume"] else ""
    # A multi-label model's figures here are at its tuned thresholds, the epoch lines' at 0.5.
    tuned = " at thresholds tuned on valid" if metrics["valid"].get("multi_label") else ""
    calibration = metrics["calibration"]
    calibrated = "" if calibration is None else (
        f"; probabilities calibrated on valid (temperature {calibration['temperature']:.2f}, calibration "
        "error {:.1%} -> {:.1%})".format(*calibration["valid_calibration_error"]))
    _log(f"saved {output}: valid {describe(metrics['valid'])}{tuned} "
         f"(epoch {metrics['best_epoch'] + 1} of {metrics['epochs_run']}, {metrics['train_seconds']:.0f}s{resumed})"
         f"{calibrated}")


@app.command()
def predict(
    model: ModelDir,
    input: Annotated[Path, typer.Argument(parser=_path, metavar="INPUT", help="Texts to label: .parquet, .csv, .tsv, .jsonl, or a folder of Parquet files.")],
    output: Annotated[Path, typer.Option("--output", "-o", parser=_path, help="Parquet file to write.")],
    id_column: Annotated[Optional[str], typer.Option(help="Column copied to the output to join on [default: the model's id column if the input has it, else a row_id column is added; '' for row_id].")] = None,
    keep_columns: Annotated[
        Optional[list[str]], typer.Option(metavar="COLUMNS", help="More input columns to copy, comma-separated or repeated.")
    ] = None,
    top_k: Annotated[int, typer.Option("--top-k", "-k", help="Also write the k most likely labels and their probabilities (-1, or k past the number of labels: all).")] = 1,
    threshold: Annotated[Optional[float], typer.Option(min=0.0, max=1.0, help="Leave labels below this probability out of the top-k lists; for a multi-label model, also the probability a label needs to be predicted [default: its threshold tuned on valid].")] = None,
    text_column: TextColumn = None,
    batch_size: BatchSize = None,
    device: Device = "auto",
    devices: Annotated[Optional[int], typer.Option(min=1, help="Worker processes, each on its own slices of rows: on the CPU they label them, with a GPU they tokenize and batch for the model in the main process. Default: one per CPU core (one less with a GPU), fewer for small inputs or little memory, none (this process alone) under 2,048 rows.")] = None,
    force: Force = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar (a line on the rows labelled every minute instead, as where stderr is not a terminal).")] = False,
) -> None:
    """Label every row of a file: pred_label, pred_prob (and top-k) into a Parquet file."""
    from hanclf.workers import start_early

    start_early(input, devices)
    from hanclf.predict import predict_file

    result = _run(lambda: predict_file(
        model, input, output, text_column=_columns(text_column), id_column=id_column,
        keep_columns=_columns(keep_columns) or [], top_k=top_k, threshold=threshold,
        batch_size=batch_size, device=device, devices=devices, force=force,
        progress=False if quiet else None,  # None: a bar where a person watches (a terminal)
        log=_log,
    ))
    rate = result["rows"] / max(result["seconds"], 1e-9)
    workers = f", {result['processes']} worker processes" if result["processes"] > 1 else ""
    _log(f"wrote {output}: {result['rows']} rows in {result['seconds']:.1f}s ({rate:.0f} rows/s{workers})")
    if result["rows_without_id"]:
        _log(f"note: rows without an id (null or empty): {result['rows_without_id']}; "
             "a join on the id cannot find their predictions")


@app.command()
def explain(
    model: ModelDir,
    input: Annotated[Path, typer.Argument(parser=_path, metavar="INPUT", help="Texts to explain: .parquet, .csv, .tsv, .jsonl, or a folder of Parquet files.")],
    output: Annotated[Optional[Path], typer.Option("--output", "-o", parser=_path, help="CSV file to write (see --level).")] = None,
    level: Annotated[str, typer.Option(help="CSV rows: token (one per token) or sentence (one per sentence, ranked).")] = "token",
    html: Annotated[Optional[Path], typer.Option(parser=_path, help="Also write a self-contained HTML report (use with --limit).")] = None,
    top_sentences: Annotated[int, typer.Option(min=0, help="Print each document's K most attended sentences (first 50 documents).")] = 0,
    faithfulness: Annotated[Optional[Path], typer.Option(parser=_path, help="Also measure whether the most attended sentences are the ones the prediction needs (ERASER comprehensiveness and sufficiency against random sentences) and write the figures as JSON.")] = None,
    limit: Annotated[Optional[int], typer.Option(help="Explain only the first N rows.")] = None,
    split: Annotated[Optional[str], typer.Option(help="Only rows whose 'split' column has this value, e.g. test.")] = None,
    id_column: Annotated[Optional[str], typer.Option(help="Column used as doc_id [default: the model's id column if the input has it, else the row number; '' for the row number].")] = None,
    label_column: Annotated[Optional[str], typer.Option(help="Column with true labels [default: the model's, if present; '' for none].")] = None,
    threshold: Annotated[Optional[float], typer.Option(min=0.0, max=1.0, help="Multi-label models: the probability a label needs to be predicted [default: each label's own, tuned on valid].")] = None,
    label_separator: Annotated[Optional[str], typer.Option(help="Multi-label: separator of labels in one string of the label column [default: the model's].")] = None,
    text_column: TextColumn = None,
    batch_size: BatchSize = None,
    device: Device = "auto",
    force: Force = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar (a line on the documents explained, and measured for --faithfulness, every minute instead, as where stderr is not a terminal).")] = False,
) -> None:
    """Word and sentence attention: CSV (--output), HTML report (--html), terminal table
    (--top-sentences), and how faithful it is (--faithfulness)."""
    from hanclf.explain import Explained, explain_file
    from hanclf.faithfulness import check_json_output, faithfulness_file, format_table

    if output is None and html is None and not top_sentences and faithfulness is None:
        typer.echo("error: nothing to write: give --output, --html, --top-sentences or --faithfulness", err=True)
        raise typer.Exit(2)
    if threshold is not None and output is None and html is None and not top_sentences:
        typer.echo(f"error: --threshold {threshold:g}: sets the labels that --output, --html and "
                   "--top-sentences show; --faithfulness measures each document's most probable label, "
                   "whatever the thresholds", err=True)
        raise typer.Exit(2)
    if faithfulness is not None:  # checked before the CSV or report is written, not after
        _run(lambda: check_json_output(faithfulness, force, input, others={"--output": output, "--html": html}))
    split = split.lower() if split else None
    table = Table("doc_id", "rank", "sent_att", "sentence", "predicted", "true", title="most attended sentences")
    documents_shown = 0

    def add_top_sentences(doc: Explained) -> None:
        nonlocal documents_shown
        if documents_shown >= TOP_SENTENCE_DOCS:
            return
        documents_shown += 1
        ranks = doc.sentence_ranks()
        predicted = doc.pred_label if doc.pred_prob is None else f"{doc.pred_label} ({doc.pred_prob:.2f})"
        for s in sorted(range(len(ranks)), key=ranks.__getitem__)[:top_sentences]:
            table.add_row(Text(str(doc.doc_id)), str(ranks[s]), f"{doc.attention.sent_att[s]:.3f}",
                          Text(" ".join(doc.attention.sentences[s])), Text(predicted),
                          Text(doc.true_label or ""), end_section=ranks[s] == min(top_sentences, len(ranks)))

    written = [path for path in (output, html) if path is not None]
    # With only the table to show, one document past it is read (to say that more follow), not
    # the whole input.
    shown_at_most = TOP_SENTENCE_DOCS + 1
    # A --limit below 1 still goes through, to be refused as with --output.
    explained = limit if written or (limit is not None and limit <= shown_at_most) else shown_at_most
    if written or top_sentences:
        result = _run(lambda: explain_file(
            model, input, output, level=level, html=html, text_column=_columns(text_column),
            id_column=id_column, label_column=label_column, split=split, limit=explained,
            batch_size=batch_size, device=device, force=force,
            on_document=add_top_sentences if top_sentences else None, threshold=threshold,
            label_separator=label_separator,
            progress=False if quiet else None,  # None: a bar where a person watches (a terminal)
            log=_log,
        ))
        if top_sentences:
            if result["documents"] > documents_shown:
                table.caption = (f"the first {documents_shown} of {result['documents']} documents" if written
                                 else f"the first {documents_shown} documents; the input has more")
            stdout.print(table)
        if written:
            _log(f"wrote {' and '.join(map(str, written))}: {result['documents']} documents")
        for note in _explain_notes(result, html):
            _log(f"note: {note}")
    if faithfulness is not None:
        figures = _run(lambda: faithfulness_file(
            model, input, faithfulness, text_column=_columns(text_column), split=split, limit=limit,
            batch_size=batch_size, device=device, force=force,
            progress=False if quiet else None, log=_log,
        ), written=written)
        stdout.print(format_table(figures))
        _log(f"wrote {faithfulness}")


@app.command()
def evaluate(
    model: ModelDir,
    data: Annotated[Path, typer.Argument(parser=_path, metavar="DATA", help="Labelled data: .parquet, .csv, .tsv, .jsonl, or a folder of Parquet files.")],
    split: Annotated[Optional[str], typer.Option(help="Only rows whose 'split' column has this value, e.g. test.")] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", parser=_path, help="Also write the metrics as JSON.")] = None,
    text_column: TextColumn = None,
    label_column: Annotated[Optional[str], typer.Option(help="Label column [default: the model's].")] = None,
    batch_size: BatchSize = None,
    device: Device = "auto",
    threshold: Annotated[Optional[float], typer.Option(min=0.0, max=1.0, help="Multi-label: the probability a label needs to count as predicted, as predict's --threshold [default: each label's threshold tuned on valid].")] = None,
    label_separator: Annotated[Optional[str], typer.Option(help="Multi-label: separator of labels in one string of the label column [default: the model's].")] = None,
    force: Force = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar (a line on the rows read every minute instead, as where stderr is not a terminal).")] = False,
) -> None:
    """Accuracy, macro-F1, per-class precision/recall/F1 and the confusion matrix."""
    from hanclf.data import SPLIT_COLUMN
    from hanclf.evaluate import evaluate_file
    from hanclf.faithfulness import check_json_output
    from hanclf.io import atomic_output, has_column, write_json

    def action() -> dict[str, Any]:
        if output is not None:
            check_json_output(output, force, data)
        if split is None and data.exists() and has_column(data, SPLIT_COLUMN):
            # Scoring training rows along with the rest flatters the model.
            _log(f"note: {data} has a '{SPLIT_COLUMN}' column; every row is scored "
                 "(--split test scores the test rows only)")
        result = evaluate_file(model, data, text_column=_columns(text_column), label_column=label_column,
                               split=split.lower() if split else None, batch_size=batch_size, device=device,
                               threshold=threshold, label_separator=label_separator,
                               progress=False if quiet else None, log=_log)
        if output is not None:
            with atomic_output(output, force) as tmp:
                write_json(tmp, result, escape_non_ascii=True)
        return result

    _print_report(_run(action))


def _print_report(result: dict[str, Any]) -> None:
    stdout.print(f"{result['data']}: {result['support']} documents", highlight=False, markup=False)
    multi_label = result.get("multi_label", False)
    summary = Table(show_header=False)
    headline = (("micro_f1", "macro_f1", "subset_accuracy", "hamming_loss") if multi_label
                else ("accuracy", "macro_f1", "weighted_f1", "calibration_error"))
    for name in headline:
        summary.add_row(name, f"{result[name]:.4f}")
    per_class = Table("label", "precision", "recall", "f1", "support",
                      *(["threshold"] if multi_label else []), title="per label" if multi_label else "per class")
    for label, row in result["per_class"].items():
        # A label in the data that the model does not know has no threshold: it is never predicted.
        cuts = result.get("thresholds", {})
        extra = [f"{cuts[label]:.2f}" if label in cuts else "-"] if multi_label else []
        per_class.add_row(Text(label), *(f"{row[k]:.4f}" for k in ("precision", "recall", "f1")), str(row["support"]), *extra)
    tables = [summary, per_class]
    if not multi_label:
        labels = result["labels"]
        confusion = Table("true \\ predicted", title="confusion matrix")
        for label in labels:
            confusion.add_column(Text(label))
        for label, counts in zip(labels, result["confusion_matrix"]):
            confusion.add_row(Text(label), *(str(c) for c in counts))
        # A matrix wider than the terminal is squeezed into it by rich, its counts cut to "1…"
        # or blanked and its labels lost (40 labels need ~400 columns): said instead. (Its
        # minimum width is not enough: rich shrinks columns unevenly and still cuts some.) One
        # that rich only wraps, every word whole (five two-word labels in 80 columns), is printed.
        least, needed = Measurement.get(stdout, stdout.options.update_width(sys.maxsize), confusion)
        if needed > stdout.width and (
            least > stdout.width or _words(confusion, needed) - _words(confusion, stdout.width)
        ):
            confusion = Text(f"confusion matrix: {needed} columns, {stdout.width} here "
                             f"(COLUMNS={needed} prints it; -o saves it)")
        tables.append(confusion)
    for table in tables:
        stdout.print(table)


def _words(table: Table, width: int) -> Counter[str]:
    """The words `table` shows printed `width` columns wide, its lines and borders left out."""
    lines = stdout.render_lines(table, stdout.options.update_width(width), pad=False)
    words = (word for line in lines for word in "".join(segment.text for segment in line).split())
    return Counter(word for word in words if not all("\u2500" <= c <= "\u257f" for c in word))


def main() -> None:
    # At exit Python's last garbage collection walks every object torch made (~0.3 s of each
    # command, measured); frozen objects are skipped, and the OS frees the memory either way.
    atexit.register(gc.freeze)
    # Redirected, Windows' stdout writes its ANSI code page (cp1252): a label, a text or the
    # tables' arrows outside it failed the command with a traceback once its work was done.
    # Escaped instead, as Python's stderr does.
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="backslashreplace")
    signal.signal(signal.SIGTERM, _on_stop_signal)
    # Not where Ctrl-C is ignored (a shell script's background job, nohup): it stays ignored.
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _on_stop_signal)
    try:
        app()
    except SystemExit as e:
        how, code = _how_stopped()
        if _stop_pending.is_set() and not _work_began.is_set():  # it ended before its work began
            typer.echo(f"{how}: no output was written", err=True)
            raise SystemExit(code) from None
        # A SIGTERM after its work (during its closing lines, say) reached Typer as Ctrl-C,
        # which exits 130 without a word.
        if e.code == 130 and _terminated.is_set():
            typer.echo(how, err=True)
            raise SystemExit(code) from None
        raise
