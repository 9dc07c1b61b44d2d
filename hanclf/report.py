"""`HtmlReport`: explained documents as one self-contained HTML page, for people to read.

Each document shows its id, the predicted label and probability, the true label where known
(misclassified documents are marked), and its sentences: every sentence's background is shaded
red by its sentence attention and every word blue by the HAN paper's display weight
sqrt(sent_att) * word_att (Yang et al. 2016, §3.6), both relative to the document's maximum;
hovering a word shows its numbers. A header lists the model's labels, the counts, a legend and
the caveat that attention shows where the model looked, not necessarily why (Jain & Wallace 2019).

The page needs nothing else: no network, no external script, font or stylesheet. It has no
JavaScript at all: the filters ("show only misclassified", one predicted label) are CSS
(`:has()` on checked inputs), so with scripts off everything still shows and the filters work
in any current browser. A Content-Security-Policy meta tag forbids scripts and remote loads, as
a second line behind escaping every text (tokens, ids, labels, title) with `html.escape`.

Sizing: each document is rendered to its HTML fragment when added (the attention arrays are not
kept), at roughly 100 bytes per token, and the page holds every document, so it is meant for
tens to a few thousand documents (a few thousand Yelp reviews make a page of tens of MB, about
what a browser opens comfortably). The caller decides how many to add.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from html import escape
from pathlib import Path

from hanclf.predictor import DocAttention

COMFORTABLE_DOCUMENTS = 2_000  # about what a page a browser opens quickly holds (explain warns past it)

# Colours (RGB) and the largest alpha each shading reaches, for the document's maximum.
SENT_RGB = "220,38,38"  # red: sentence attention
WORD_RGB = "37,99,235"  # blue: sqrt(sent_att) * word_att
SENT_MAX_ALPHA = 0.35
WORD_MAX_ALPHA = 0.9
LIGHT_TEXT_ALPHA = 0.55  # words shaded darker than this are written in white


def _e(value: object) -> str:
    """Any text for the page, escaped for element content and quoted attributes alike."""
    return escape(str(value), quote=True)


def _finite(value: float) -> float:
    value = float(value)
    return value if math.isfinite(value) and value > 0 else 0.0


@dataclass
class _Doc:
    html: str  # the rendered <article>
    predicted: list[int]  # ids of the predicted labels
    has_truth: bool
    wrong: bool


class HtmlReport:
    """Collects explained documents and writes one self-contained HTML page.

    For tens to a few thousand documents: each is kept as its rendered HTML (about 100 bytes
    per token) until `write`; the caller limits how many it adds.
    """

    def __init__(
        self, label_names: list[str], title: str, separator: str = ",", thresholds: list[float] | None = None,
    ) -> None:
        self.label_names = [str(n) for n in label_names]
        self.title = title
        self.separator = separator  # joins a multi-label prediction's names
        self.thresholds = thresholds  # a multi-label model's: the probability each label needs
        self._docs: list[_Doc] = []

    def __len__(self) -> int:
        return len(self._docs)

    def add(
        self, doc_id: str, attention: DocAttention, true_label: str | None,
        predicted: list[int] | None = None,
    ) -> None:
        """Render one document: `attention` as `Predictor.attend` returns it; `true_label` is
        the label in the input (None when unknown; "" is unknown too for a single-label model,
        but for a multi-label one the empty set: no label applies), compared as text with the
        prediction;
        `predicted` the predicted label ids (default: the most probable; several, in id order,
        for a multi-label model, whose names are then joined by the separator)."""
        probs = [float(p) for p in attention.probs]
        if predicted is None:
            predicted = [max(range(len(probs)), key=probs.__getitem__)]
        pred_name = self.separator.join(self.label_names[i] for i in predicted)
        multi_label = self.thresholds is not None
        truth = None if true_label is None or (str(true_label) == "" and not multi_label) else str(true_label)
        wrong = truth is not None and truth != pred_name

        classes = " ".join(["doc", *(f"p{i}" for i in predicted)])
        classes += (" wrong" if wrong else "") + (" known" if truth is not None else "")
        shown_prob = f" {max(probs[i] for i in predicted):.3f}" if predicted else ""
        head = [
            f'<span class="id">{_e(doc_id)}</span>',
            f'<span class="pred">predicted <b>{_e(pred_name or "(no label)")}</b>{shown_prob}</span>',
        ]
        if truth is not None:
            head.append(f'<span class="true">true <b>{_e(truth or "(no label)")}</b></span>')
            head.append(
                '<span class="mark bad">&#10007; misclassified</span>' if wrong
                else '<span class="mark ok">&#10003; correct</span>'
            )
        ranked = sorted(range(len(probs)), key=lambda i: -probs[i])
        head.append(
            '<span class="probs" title="probability of each label">'
            + " &middot; ".join(f"{_e(self.label_names[i])}: {probs[i]:.3f}" for i in ranked)
            + "</span>"
        )
        parts = [f'<article class="{classes}"><header>{" ".join(head)}</header>']
        parts.append(self._sentences(attention))
        parts.append("</article>\n")
        self._docs.append(_Doc("".join(parts), predicted, truth is not None, wrong))

    @staticmethod
    def _sentences(attention: DocAttention) -> str:
        sent_att = [_finite(a) for a in attention.sent_att]
        if not attention.sentences:
            return '<p class="empty">(empty text: the prediction is the model\'s prior)</p>'
        weights = [[_finite(w) for w in ws] for ws in attention.display_weights()]
        max_sent = max(sent_att, default=0.0) or 1.0
        max_weight = max((w for ws in weights for w in ws), default=0.0) or 1.0
        out = []
        for s, (tokens, sa) in enumerate(zip(attention.sentences, sent_att)):
            alpha = SENT_MAX_ALPHA * sa / max_sent
            words = []
            for token, known, word_att, weight in zip(tokens, attention.in_vocab[s], attention.word_att[s], weights[s]):
                a = WORD_MAX_ALPHA * weight / max_weight
                classes = []
                if a > LIGHT_TEXT_ALPHA:
                    classes.append("hi")
                if not known:
                    classes.append("unk")
                class_attribute = f' class="{" ".join(classes)}"' if classes else ""
                unknown = "" if known else " &middot; not in the vocabulary: read as &lt;unk&gt;"
                words.append(
                    f'<span{class_attribute} style="background:rgba({WORD_RGB},{a:.3f})" '
                    f'title="word_att {_finite(word_att):.4f} &middot; sent_att {sa:.4f} '
                    f'&middot; weight {weight:.4f}{unknown}">{_e(token)}</span>'
                )
            out.append(
                f'<p class="sent" dir="auto" style="background:rgba({SENT_RGB},{alpha:.3f})" '
                f'title="sent_idx {s}: sent_att {sa:.4f}">'
                f'<span class="sa">{sa:.2f}</span>{" ".join(words)}</p>'
            )
        if attention.unseen_tokens:
            tokens = "token" if attention.unseen_tokens == 1 else "tokens"
            at_least, rest = ("at least ", " (the text is longer than the part tokenized)") \
                if attention.read_partly else ("", "")
            out.append(f'<p class="cut">&hellip; and {at_least}{attention.unseen_tokens} more {tokens} '
                       f"past the model's sentence and word limits: not seen{rest}</p>")
        return "".join(out)

    def write(self, path: Path) -> None:
        """Write the page to `path` (UTF-8); the caller renames it into place."""
        n = len(self.label_names)
        known = sum(d.has_truth for d in self._docs)
        wrong = sum(d.wrong for d in self._docs)
        per_label = [sum(i in d.predicted for d in self._docs) for i in range(n)]
        with Path(path).open("w", encoding="utf-8", newline="\n") as f:
            f.write(self._head(per_label))
            f.write(self._summary(known, wrong))
            f.write(self._filters(wrong, per_label))
            f.write("<main>\n")
            for doc in self._docs:
                f.write(doc.html)
            if not self._docs:
                f.write('<p class="none">No documents.</p>\n')
            f.write("</main>\n</body>\n</html>\n")

    def _head(self, per_label: list[int]) -> str:
        # One rule per label: with "predicted = label i" checked, hide documents of other labels.
        label_rules = "\n".join(
            f"body:has(#f-p{i}:checked) .doc:not(.p{i}) {{ display: none; }}"
            for i in range(len(per_label))
        )
        return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(self.title)}</title>
<style>
{_CSS}
{label_rules}
</style>
</head>
<body>
"""

    def _summary(self, known: int, wrong: int) -> str:
        labels = "Labels: " + " ".join(f'<span class="label">{_e(name)}</span>' for name in self.label_names)
        if self.thresholds is not None:  # or a reader sees a label of 0.77 left out, and no reason
            labels = "Labels, each predicted where its probability reaches its threshold: " + " ".join(
                f'<span class="label">{_e(name)} &ge; {t:g}</span>'
                for name, t in zip(self.label_names, self.thresholds)
            )
        shared = ""
        if self.thresholds is not None:  # else a reader takes the blue words for each label's reasons
            shared = ("<p>This model has one attention for all labels: the shading is the same whichever "
                      "label you look at, and does not say which words led to which label.</p>\n")
        if known:
            errors = f"misclassified of {known} with a true label"
        else:
            errors = "misclassified (no true labels in the input)"
        return f"""<header class="top">
<h1>{_e(self.title)}</h1>
<p>{labels}</p>
<p class="counts"><b id="n-docs">{len(self._docs)}</b> documents &middot; <b id="n-wrong">{wrong}</b> {errors}</p>
<div class="legend">
<p><b>How to read it:</b> the redder a sentence, the more attention the model paid to it;
the bluer a word, the more attention it got, within its sentence and the document. The figures:</p>
<p><span class="swatch" style="background:rgba({SENT_RGB},{SENT_MAX_ALPHA})">sentence</span>
Sentence background: red, by the sentence attention α<sub>i</sub> relative to the document's
most attended sentence (its value is in the margin; they sum to 1 over a document).</p>
<p><span class="swatch hi" style="background:rgba({WORD_RGB},{WORD_MAX_ALPHA})">word</span>
<span class="swatch" style="background:rgba({WORD_RGB},{WORD_MAX_ALPHA / 3:.2f})">word</span>
Word background: blue, by the display weight √α<sub>i</sub>&nbsp;·&nbsp;α<sub>it</sub>
(sentence attention times word attention, Yang et al. 2016) relative to the document's largest;
hover a word for word_att, sent_att and weight. Words with a dotted underline are not in the
model's vocabulary: it read each as the same unknown word, &lt;unk&gt;.</p>
<p>Tokens are shown as the model read them, separated by spaces; those past the model's sentence
and word limits are not shown (the model never saw them): a document so cut ends with a line
saying how many.</p>
{shared}<p class="caveat">Attention shows where the model looked, not necessarily why it decided
(Jain &amp; Wallace, 2019, “Attention is not Explanation”).</p>
</div>
</header>
"""

    def _filters(self, wrong: int, per_label: list[int]) -> str:
        options = [
            '<label><input type="radio" name="pred" id="f-all" checked> all '
            f"({len(self._docs)})</label>"  # not sum(per_label): multi-label sets overlap
        ]
        options += [
            f'<label><input type="radio" name="pred" id="f-p{i}"> {_e(name)} ({count})</label>'
            for i, (name, count) in enumerate(zip(self.label_names, per_label))
        ]
        return f"""<div class="filters">
<label><input type="checkbox" id="f-wrong"> show only misclassified ({wrong})</label>
<span class="group">predicted: {" ".join(options)}</span>
</div>
"""


_CSS = """\
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
  color: #1f2328; background: #f6f7f9; margin: 0; padding: 0 24px 48px; }
h1 { font-size: 22px; margin: 18px 0 6px; }
.top p { margin: 4px 0; }
.label { display: inline-block; background: #e6e9ef; border-radius: 4px; padding: 0 6px;
  margin-right: 4px; font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 13px; }
.legend { background: #fff; border: 1px solid #d8dce3; border-radius: 6px; padding: 6px 12px;
  margin: 10px 0; font-size: 13.5px; }
.legend .swatch { display: inline-block; padding: 0 6px; border-radius: 3px; margin-right: 2px; }
.caveat { color: #6e4b00; }
.filters { position: sticky; top: 0; z-index: 1; background: #f6f7f9; padding: 8px 0;
  border-bottom: 1px solid #d8dce3; margin-bottom: 12px; font-size: 14px; }
.filters label { margin-right: 12px; white-space: nowrap; cursor: pointer; }
.filters .group { margin-left: 12px; }
body:has(#f-wrong:checked) .doc:not(.wrong) { display: none; }
.doc { background: #fff; border: 1px solid #d8dce3; border-left: 5px solid #9aa4b2;
  border-radius: 6px; padding: 8px 14px 10px; margin: 0 0 14px; overflow-wrap: anywhere; }
.doc.known { border-left-color: #2da44e; }
.doc.wrong { border-left-color: #cf222e; background: #fffafa; }
.doc > header { display: flex; flex-wrap: wrap; gap: 4px 16px; align-items: baseline;
  margin-bottom: 6px; font-size: 14px; }
.doc .id { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-weight: 600; }
.doc .probs { color: #656d76; font-size: 12.5px; }
.mark { font-weight: 600; border-radius: 4px; padding: 0 6px; }
.mark.bad { color: #fff; background: #cf222e; }
.mark.ok { color: #1a7f37; }
.sent { margin: 2px 0; padding: 2px 6px 2px 52px; text-indent: -46px; border-radius: 3px; }
.sent .sa { display: inline-block; width: 40px; margin-right: 6px; text-indent: 0;
  color: #8c1d18; font-size: 11.5px; font-family: ui-monospace, "DejaVu Sans Mono", monospace; }
.sent span[title] { border-radius: 3px; padding: 0 1px; }
.hi { color: #fff; }
.unk { text-decoration: underline dotted #656d76; }
.empty, .none, .cut { color: #656d76; font-style: italic; }"""
