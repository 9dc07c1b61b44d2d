"""Faithfulness of sentence attention: does removing the sentences the model attends to most
change its prediction more than removing sentences at random?

ERASER-style metrics (DeYoung et al., ACL 2020), applied to the sentences of a HAN. For each
document x with n >= 2 sentences (as the model saw them, after truncation), ŷ its predicted
class and p = p(ŷ|x):

- **comprehensiveness@k** = p − p(ŷ | x without its k most attended sentences). High: the
  model needed those sentences; taking them away lowers its confidence in its own answer.
- **sufficiency@k** = p − p(ŷ | only the k most attended sentences, in their original order).
  Low (near 0, or negative): those sentences alone are enough for the prediction.
- both again with k sentences drawn at random instead (the same k; mean over `random_repeats`
  seeded draws per document): the reference an uninformative ranking would get.
  `ratio` = attention comprehensiveness / random comprehensiveness (None if the random one is
  not positive).
- k is capped at n − 1 per document, so something always remains (and, for sufficiency,
  something is always left out); `capped` counts the documents where that happened.
- **deletion curve**: sentences removed one at a time, most attended first (and, as the
  reference, in random orders), p(ŷ) recorded after each removal. Step j of n is at fraction
  j/n removed; each document's curve is linearly interpolated onto 0%, 10%, ..., 100% and the
  curves averaged. At 100% nothing is left and the model gives its prior (the same for both
  orders).
- **AOPC** (area over the perturbation curve): a document's mean drop p − p_j over the
  removal steps j = 1 .. n − 1 (the steps where something remains), averaged over documents.
- **flip rate**: the share of documents whose predicted class changes when the top-1 attended
  sentence is removed, vs. when one random sentence is removed (share of draws, averaged).

ŷ and p(ŷ|x) come from `predict_tokenized` on the document as the model saw it, scored in the
same batches as its perturbed copies (`attend` supplies the sentences and their attention), so
no figure mixes two code paths. Every figure is a mean over the documents used; documents with fewer than 2 sentences (empty
texts included) are skipped and counted in `skipped_short`.

Higher comprehensiveness (and AOPC, flip rate) for attention than for random deletion is
evidence, not proof, that attention points at what the model uses: removing sentences puts the
model off its training distribution, and a sentence can matter without being attended (Jain &
Wallace 2019; Wiegreffe & Pinter 2019).

Randomness: one `numpy.random.default_rng(seed)`; for each document used, in input order,
`random_repeats` permutations `rng.permutation(n)`. Draw r's first k' sentences are the random
ones removed (comprehensiveness) or kept (sufficiency) at k, and the permutation is the random
deletion order. Ties in attention go to the earlier sentence.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rich.table import Table

from hanclf.artifact import check_not_model_file
from hanclf.errors import UsageError
from hanclf.explain import iter_rows
from hanclf.io import TextColumns, as_path, atomic_output, check_output, refuse_stdout, to_stderr, write_json
from hanclf.predictor import Predictor
from hanclf.progress import RowProgress

CURVE_POINTS = 11  # 0%, 10%, ..., 100% removed

Doc = list[list[str]]


def _remove(doc: Doc, drop: Sequence[int]) -> Doc:
    gone = set(int(i) for i in drop)
    return [s for i, s in enumerate(doc) if i not in gone]


def _keep(doc: Doc, kept: Sequence[int]) -> Doc:
    return [doc[i] for i in sorted(int(i) for i in kept)]


class _Plan:
    """The perturbed copies of one chunk of documents, and where each document's copies are."""

    def __init__(self) -> None:
        self.copies: list[Doc] = []

    def add(self, doc: Doc) -> int:
        self.copies.append(doc)
        return len(self.copies) - 1


def _plan_document(
    doc: Doc, att: np.ndarray, ks: Sequence[int], perms: np.ndarray, plan: _Plan
) -> dict[str, Any]:
    """Indices into plan.copies of every perturbation of `doc` this module scores."""
    n = len(doc)
    order = np.argsort(-np.asarray(att, dtype=np.float64), kind="stable")
    full = plan.add(doc)  # scored with the copies, so p(ŷ|x) and the rest share one code path
    # deletion in attention order: step j removes order[:j], j = 1 .. n-1 (step n: empty doc)
    att_steps = [plan.add(_remove(doc, order[:j])) for j in range(1, n)]
    rand_steps = [[plan.add(_remove(doc, perm[:j])) for j in range(1, n)] for perm in perms]
    # sufficiency: keep only the first k' (k' = min(k, n-1)); comprehensiveness reuses the steps
    kept = sorted(set(ks))
    att_suff = {k: plan.add(_keep(doc, order[:k])) for k in kept}
    rand_suff = [{k: plan.add(_keep(doc, perm[:k])) for k in kept} for perm in perms]
    return {"full": full, "att_steps": att_steps, "rand_steps": rand_steps, "att_suff": att_suff, "rand_suff": rand_suff}


def faithfulness(
    predictor: Predictor,
    texts: Sequence[str | None],
    k_values: Sequence[int] = (1, 2, 3),
    random_repeats: int = 5,
    seed: int = 0,
    batch_docs: int = 512,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Comprehensiveness, sufficiency, deletion curves, AOPC and flip rates of the sentence
    attention of `predictor` on `texts` (see the module docstring); a JSON-ready dict.

    `predictor` is a `hanclf.predictor.Predictor`, or anything with its `attend` (giving
    `.sentences`, `.sent_att`, `.probs` per text) and `predict_tokenized`. Documents are processed `batch_docs` at a time: one `attend` call,
    then all their perturbed copies in one `predict_tokenized` call (which batches them by
    size). `progress(done, total)` is called after each chunk.
    """
    if isinstance(k_values, (str, int)):  # "12" was read as k = 1 and k = 2
        raise TypeError(f"k_values {k_values!r}: give a list of numbers of sentences, e.g. [1, 2, 3]")
    k_values = [int(k) for k in k_values]
    if not k_values or min(k_values) < 1:
        raise UsageError(f"k_values {k_values}: each k must be at least 1")
    if random_repeats < 1:
        raise UsageError(f"random_repeats {random_repeats}: must be at least 1")
    if batch_docs < 1:
        raise UsageError(f"batch_docs {batch_docs}: must be at least 1")

    rng = np.random.default_rng(seed)
    grid = np.linspace(0.0, 1.0, CURVE_POINTS)
    prior: np.ndarray | None = None  # p(. | empty document): the last step of every curve

    # per used document
    sentences, base = [], []
    comp_att = {k: [] for k in k_values}
    comp_rand = {k: [] for k in k_values}
    suff_att = {k: [] for k in k_values}
    suff_rand = {k: [] for k in k_values}
    capped = {k: 0 for k in k_values}
    curve_att, curve_rand, aopc_att, aopc_rand, flip_att, flip_rand = [], [], [], [], [], []
    total = skipped = 0

    for start in range(0, len(texts), batch_docs):
        chunk = list(texts[start : start + batch_docs])
        attention = predictor.attend(chunk)
        if prior is None:
            prior = np.asarray(predictor.predict_tokenized([[]]), dtype=np.float64)[0]
        plan = _Plan()
        used = []
        for a in attention:
            n = len(a.sentences)
            if n < 2:
                skipped += 1
                continue
            perms = np.stack([rng.permutation(n) for _ in range(random_repeats)])
            ks = [min(k, n - 1) for k in k_values]
            used.append((a, ks, _plan_document(a.sentences, a.sent_att, ks, perms, plan)))
        total += len(chunk)
        probs = np.asarray(predictor.predict_tokenized(plan.copies), dtype=np.float64) if plan.copies else None

        for a, ks, where in used:
            n = len(a.sentences)
            full = probs[where["full"]]
            y = int(full.argmax())
            p0 = full[y]
            att_p = probs[where["att_steps"], y]  # after 1 .. n-1 removals
            rand_p = probs[np.asarray(where["rand_steps"]), y]  # (repeats, n-1)
            sentences.append(n)
            base.append(p0)
            for k, kk in zip(k_values, ks):
                capped[k] += kk < k
                comp_att[k].append(p0 - att_p[kk - 1])
                comp_rand[k].append(p0 - rand_p[:, kk - 1].mean())
                suff_att[k].append(p0 - probs[where["att_suff"][kk], y])
                suff_rand[k].append(p0 - np.mean([probs[s[kk], y] for s in where["rand_suff"]]))
            x = np.arange(n + 1) / n
            curve_att.append(np.interp(grid, x, np.concatenate([[p0], att_p, [prior[y]]])))
            rand_curves = np.concatenate(
                [np.full((random_repeats, 1), p0), rand_p, np.full((random_repeats, 1), prior[y])], 1
            )
            curve_rand.append(np.mean([np.interp(grid, x, c) for c in rand_curves], 0))
            aopc_att.append(float(np.mean(p0 - att_p)))
            aopc_rand.append(float(np.mean(p0 - rand_p)))
            flip_att.append(float(probs[where["att_steps"][0]].argmax() != y))
            first = [steps[0] for steps in where["rand_steps"]]
            flip_rand.append(float(np.mean(probs[first].argmax(1) != y)))
        if progress is not None:
            progress(total, len(texts))

    used_n = len(base)

    def mean(values: list[float]) -> float | None:
        return float(np.mean(values)) if values else None

    def ratio(a: float | None, b: float | None) -> float | None:
        return a / b if a is not None and b is not None and b > 0 else None

    per_k = []
    for k in k_values:
        ca, cr = mean(comp_att[k]), mean(comp_rand[k])
        per_k.append({
            "k": k,
            "capped": int(capped[k]),
            "comprehensiveness": {"attention": ca, "random": cr, "ratio": ratio(ca, cr)},
            "sufficiency": {"attention": mean(suff_att[k]), "random": mean(suff_rand[k])},
            "attention_higher_share": mean([float(a > r) for a, r in zip(comp_att[k], comp_rand[k])]),
        })
    aa, ar = mean(aopc_att), mean(aopc_rand)
    return {
        "documents": total,
        "used": used_n,
        "skipped_short": skipped,
        "mean_sentences": mean(sentences),
        "mean_prob": mean(base),
        "per_k": per_k,
        "aopc": {"attention": aa, "random": ar, "ratio": ratio(aa, ar)},
        "deletion_curve": {
            "fraction_removed": [round(float(f), 2) for f in grid],
            "attention": [float(v) for v in np.mean(curve_att, 0)] if used_n else None,
            "random": [float(v) for v in np.mean(curve_rand, 0)] if used_n else None,
        },
        "flip_rate": {"attention": mean(flip_att), "random": mean(flip_rand)},
        "settings": {"k_values": k_values, "random_repeats": random_repeats, "seed": seed},
    }


def _fmt(value: float | None, digits: int = 4) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def format_table(result: dict[str, Any]) -> Table:
    """The headline figures of `faithfulness(...)` as a rich table: one row per metric,
    attention vs random and their ratio."""
    # The title is wrapped at the table's width: the count of skipped documents is a caption.
    table = Table(
        title=f"faithfulness of sentence attention, {result['used']} documents",
        caption=f"documents of fewer than 2 sentences skipped: {result['skipped_short']}",
    )
    for name, justify in (("metric", "left"), ("attention", "right"), ("random", "right"), ("ratio", "right")):
        table.add_column(name, justify=justify)
    for row in result["per_k"]:
        k, c = row["k"], row["comprehensiveness"]
        table.add_row(f"comprehensiveness@{k} ↑", _fmt(c["attention"]), _fmt(c["random"]), _fmt(c["ratio"], 2))
    for row in result["per_k"]:
        s = row["sufficiency"]
        table.add_row(f"sufficiency@{row['k']} ↓", _fmt(s["attention"]), _fmt(s["random"]), "")
    a = result["aopc"]
    table.add_row("AOPC (deletion) ↑", _fmt(a["attention"]), _fmt(a["random"]), _fmt(a["ratio"], 2))
    f = result["flip_rate"]
    table.add_row("flip rate, 1 sentence removed ↑", _fmt(f["attention"], 3), _fmt(f["random"], 3), "")
    curve = result["deletion_curve"]
    if curve["attention"] is not None:
        for frac, pa_, pr in zip(curve["fraction_removed"], curve["attention"], curve["random"]):
            if round(frac * 10) % 2 == 0 and 0 < frac < 1:  # 20%, 40%, 60%, 80%
                table.add_row(f"p(ŷ) after {frac:.0%} removed", _fmt(pa_), _fmt(pr), "")
    return table


def check_json_output(
    output: Path, force: bool, input_path: Path, others: dict[str, Path | None] | None = None
) -> None:
    """Refuse, before any work, a path the figures (JSON: these, or evaluate's) cannot be
    written to, or one that `others` (the other outputs of the same command, by flag) take
    already."""
    for flag, other in (others or {}).items():
        if other is not None and output.resolve() == other.resolve():
            raise UsageError(f"{output}: named for both {flag} and --faithfulness; give each its own file")
    check_not_model_file(output)  # first: --force, which check_output advises, would not do
    refuse_stdout(output)
    if output.suffix.lower() != ".json":
        raise UsageError(f"{output}: the figures are written as JSON; name it *.json")
    check_output(output, force, reads=input_path)


def faithfulness_file(
    model_dir: str | Path,
    input_path: str | Path,
    output: str | Path | None = None,
    text_column: TextColumns | None = None,
    split: str | None = None,
    limit: int | None = None,
    k_values: Sequence[int] = (1, 2, 3),
    random_repeats: int = 5,
    seed: int = 0,
    batch_size: int | None = None,
    device: str = "auto",
    force: bool = False,
    progress: bool | None = None,
    log: Callable[[str], None] = to_stderr,
) -> dict[str, Any]:
    """`faithfulness` of the model on the texts of a file (the first `limit` rows of `split`);
    with `output`, also written there as JSON. `progress` and `log`: the documents measured so
    far, as predict_file's rows."""
    input_path, output = as_path(input_path, "input_path", data=True), as_path(output, "output", optional=True)
    if output is not None:
        check_json_output(output, force, input_path)
    predictor = Predictor(model_dir, device, batch_size)
    texts = [
        text
        for batch, _, _ in iter_rows(predictor, input_path, text_column=text_column, label_column="",
                                     split=split, limit=limit)
        for text in batch
    ]
    result = {"data": str(input_path) + (f" (split={split})" if split else "")}
    with RowProgress(len(texts), progress, log, "measured", "documents") as measured:
        result.update(faithfulness(predictor, texts, k_values, random_repeats, seed,
                                   progress=lambda done, total: measured(done)))
    if output is not None:
        with atomic_output(output, force) as tmp:
            write_json(tmp, result, escape_non_ascii=True)
    return result
