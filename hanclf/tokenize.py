"""Sentence splitting and word tokenization for review text (Yelp, IMDb, Amazon), stdlib only.

Cleaning: HTML entities are decoded, other HTML tags (<i>, <b>, <a href=..>, <span>, <script>,
comment markers ...) dropped, a made-up tag (<sarcasm>) kept as words, text NFC-normalized
(accented letters become single characters). Format characters that may sit inside a word
(soft hyphen, zero-width non-joiner, word joiner, direction marks, overrides and isolates) are
dropped; whitespace, zero-width spaces and controls only separate tokens.

A sentence ends at:
- a newline, or a block tag (<br />, <br>, <p>, </p>, <div>, <hr>, <li>, ...);
- `!` or `?` (or a run: `!!!`, `?!?`) followed by whitespace, whatever comes next;
- a lone `.` followed by whitespace (also before a lowercase word: reviews often skip capitals),
  except after a title, month, capital initial but I, or dotted acronym (Mr. Mrs. Ms. Dr. Prof.
  Sr. Jr. St. Mt. vs. Jan.-Dec. Sept., J. K., U.S., e.g., i.e.) or "No." before a number, which
  never end a sentence;
- an ellipsis (`...`, `..`, `…`, `. . .`), a phrase-closing abbreviation (etc. Inc. Ltd. Co.
  Corp. a.m. p.m.) or an end mark plus closing quotes/brackets (`."`, `!)`): only when the next
  word does not start lowercase (`He said "wow." Then` splits, `"Why?" he asked` does not);
- an end mark with no space before a capitalized word after a lowercase one (`film.The`);
- Chinese and Japanese end marks 。！？ (or `!`/`?` right after a Chinese or Japanese
  character), and the full stops and question marks of other scripts (। ॥ ؟ ۔ ።), with the
  closing brackets and quotes after them, space or none.
Closing quotes/brackets stay with the sentence they close, and so do emoticons and emoji right
after an end mark (`Great! :) Back soon` -> `Great! :)` | `Back soon`); emoticons never end a
sentence themselves.

One token each: words, with their combining marks (नमस्ते, مَطْعَم, שָׁלוֹם); words with inner
apostrophes, hyphens or `&` (don't, don’t, I'm, well-made, R&B); numbers with inner `.,:/` and
a trailing `%` (3.5, 1,000, 9/10, 10:30, 50%; `$12.99` is `$` + `12.99`); abbreviations with
their dots (Mr., e.g., U.S., etc., J., No. before a number); each Chinese ideograph and
Japanese kana (no spaces separate their words: a character is a token, as multilingual
tokenizers treat ideographs); URLs, bare domains and e-mail addresses; emoticons (:) :-( ;) :D
:P <3 ^_^ -_- o_O) and emoji (skin tones, flags and joined sequences included); `...`/`…`; runs of `!`/`?`; `--`. Any other
visible character is a token by itself (, ; : ( ) " — $). Case is kept.
"""

from __future__ import annotations

import contextlib
import gc
import html
import re
import unicodedata
from collections.abc import Iterable, Iterator

# Raised whenever tokenize's output changes for any text. A model keeps the version its
# vocabulary was made with (vocab.json), and loading it under another warns: its words may now
# split differently than in training. tests/test_tokenize.py holds a digest of the output for each
# version, so a change of the rules that forgets to raise it fails there.
TOKENIZER_VERSION = 1

# Titles and months never end a sentence; phrase-closing abbreviations only before a capital.
_TITLES = (
    "mr mrs ms dr prof sr jr st mt vs jan feb mar apr jun jul aug sep sept oct nov dec"
).split()
_PHRASE_ENDS = "etc inc ltd co corp".split()


def _behind(words: list[str], tail: str, negative: bool) -> str:
    """Lookbehind for `<one of words><tail>` just before the cursor (any case, whole word).

    A lookbehind needs a fixed width, so there is one per word length."""
    by_length: dict[int, list[str]] = {}
    for word in words:
        by_length.setdefault(len(word), []).append(word)
    sign = "!" if negative else "="
    parts = [rf"(?<{sign}\b(?i:{'|'.join(ws)}){tail})" for ws in by_length.values()]
    return "".join(parts) if negative else "(?:" + "|".join(parts) + ")"


_NOT_ABBREVIATION = _behind(_TITLES + _PHRASE_ENDS, r"\.", negative=True)
_ABBREVIATION = _behind(_TITLES + _PHRASE_ENDS, r"\.", negative=False)
_PHRASE_END = _behind(_PHRASE_ENDS, r"\.", negative=False)

_LOWER = r"a-z\u00df-\u00f6\u00f8-\u00ff\u03ac-\u03ce\u0430-\u045f"
_NEWLINE = r"\n\r\v\f\x1c-\x1e\x85\u2028\u2029"
_HSPACE = rf"[^\S{_NEWLINE}]"
_CLOSE = r"[\"'”’»)\]}]"
_EMOJI = r"[\u2600-\u27bf\u2b00-\u2bff\U0001f000-\U0001faff]"
_MODIFIERS = r"[\ufe0f\u20e3\U0001f3fb-\U0001f3ff]*"
_EMOJI_SEQUENCE = rf"{_EMOJI}{_MODIFIERS}(?:\u200d{_EMOJI}{_MODIFIERS})*"
# Letter emoticons (o_O) already tokenize as one word; the split needs them to spot trailing ones.
_EMOTICON_LETTER = r"[oO0T]_+[oO0T](?![^\W_])"
_EMOTICON_OTHER = (
    r"[:;=][\-^o']?(?:\)+|\(+|[DPpOo](?![^\W_])|[\]\[/\\|*])",
    r"</?3+(?!\d)",
    r"\^[_.\-]?\^",
    r"[>;\-]_+[<;\-]",
)
_SMILEY = "(?:" + "|".join((_EMOTICON_LETTER, *_EMOTICON_OTHER, _EMOJI_SEQUENCE)) + ")"

# HTML elements only: a made-up tag in a review (<sarcasm>, <sigh>) is words. What a comment,
# script or style holds stays as text (never in reviews, rare in scraped pages): removing it
# would cost quadratic time on unclosed ones.
_BLOCK_TAG = re.compile(
    r"</?(?:br|p|div|hr|li|ul|ol|h[1-6]|tr|td|th|thead|tbody|tfoot|caption|table|blockquote"
    r"|section|article|header|footer|nav|main|aside|figure|figcaption|pre|dl|dt|dd|html|head"
    r"|body|title|form|noscript|iframe)\b[^<>]*>",
    re.I,
)
_INLINE_TAG = re.compile(
    r"<!--|-->"
    r"|</?(?:a|b|i|u|s|em|strong|span|font|small|big|sub|sup|strike|del|ins|tt|code|cite|q"
    r"|abbr|img|mark|center|label|input|button|select|option|textarea|meta|link|col|colgroup"
    r"|wbr|time|video|audio|source|picture|svg|kbd|samp|var|dfn|bdi|bdo|ruby|rt|rp|script"
    r"|style)\b[^<>]*>",
    re.I,
)

# A break is a newline or a run of end marks; the captured run (with closing quotes and trailing
# emoticons) is glued back onto its sentence. The pattern opens with a plain character class,
# which lets `re` jump straight to the few candidate characters; each branch tests its cheapest
# condition first.
_SPLIT = re.compile(
    rf"""
    (
        [.!?…{_NEWLINE}]
        (?:
            (?<=[{_NEWLINE}])
            # a missing space ("the film.The end", "fun!!This"): a break before a capitalized word
          | (?<=[a-z][a-z][.!?…]) (?<!www\.) [.!?…]* (?=[A-Z][a-z])
          | (?<![.!?…][.!?…]) [.!?…]*   # a whole run of end marks, tried from its start only
            (?:
                # emoticons after an end mark belong to that sentence; a break follows them
                {_CLOSE}{{0,2}} {_HSPACE}+{_SMILEY} (?:{_HSPACE}*{_SMILEY})* (?=\s|$)
                # `!`, `?` or a lone period that is no abbreviation: a break before anything
                # but more dots (spaced ". . .")
              | (?=\s+[^\s.…])
                (?: (?<=[!?])
                  | (?<=\.) (?<![.…]\.) (?<!\.\s\.) {_NOT_ABBREVIATION}
                    (?<!\b[A-HJ-Z]\.) (?<!\b[^\W\d_]\.[^\W\d_]\.) (?!(?<=\b[Nn][Oo]\.)\s+\d)
                )
                # closing quotes or brackets, an ellipsis or a phrase-ending abbreviation: a
                # break unless the next word starts lowercase
              | {_CLOSE}{{1,2}} (?=\s+[^\s.…{_LOWER}])
              | (?=\s+[^\s.…{_LOWER}])
                (?: (?<=[.…][.…]) | (?<=…) | (?<=\.\s\.) | {_PHRASE_END} | (?<=\b[AaPp]\.[Mm]\.) )
            )
        )
    )
    \s*
    """,
    re.X,
)

_URL_END = r"[^\s<>\"'.,;:!?)\]]"
_TLD = r"com|org|net|edu|gov|io|co|uk|us|ca|au|de|fr|info|biz|tv|me"
# What the tokenizer skips: whitespace and invisible characters (controls, zero-width marks,
# soft hyphen, BOM, stray variation selectors). Pieces are stripped of them at the end, so a token
# search never fails after a long blank run (a failure there costs quadratic time).
_BLANK_RANGES = (
    (0x00, 0x20), (0x7F, 0xA0), (0xAD, 0xAD), (0x1680, 0x1680), (0x2000, 0x200F), (0x2028, 0x2029),
    (0x202F, 0x202F), (0x205F, 0x2064), (0x3000, 0x3000), (0xFE0E, 0xFE0F), (0xFEFF, 0xFEFF),
)
_BLANK = "".join(chr(c) for first, last in _BLANK_RANGES for c in range(first, last + 1))
_BLANK_CLASS = "".join(rf"\u{first:04x}-\u{last:04x}" for first, last in _BLANK_RANGES)

def _combining_mark_ranges() -> str:
    """The combining marks (Mn, Mc, Me) of the Basic Multilingual Plane, as ranges for a
    character class. `re`'s \\w leaves them out, which would cut words of Devanagari, Arabic with
    vowel signs, Hebrew with points, Thai, Bengali, Tamil ... into pieces."""
    ranges: list[list[int]] = []
    for code in range(0x300, 0x10000):
        if unicodedata.category(chr(code))[0] == "M":
            if ranges and ranges[-1][1] == code - 1:
                ranges[-1][1] = code
            else:
                ranges.append([code, code])
    return "".join(rf"\u{first:04x}-\u{last:04x}" for first, last in ranges)


_WORD_CHARS = rf"\w{_combining_mark_ranges()}"  # letters, digits, underscore, combining marks

# One word rule. After the letters/digits, the first branch settles plain words (nothing that
# could extend them follows); every other branch opens with a literal or a character class, so
# `re` rejects it in a few cycles; the empty branch ends words like "film" in "film.".
_TOKEN = re.compile(
    rf"""
    [{_BLANK_CLASS}]*(
        [{_WORD_CHARS}]+
        (?:
            (?![{_WORD_CHARS}'’\-&.,:/%@])
          | (?:['’\-&][{_WORD_CHARS}]+)+
          | (?:[.,:/](?<=\d[.,:/])(?=\d)\w+)+ %?
          | %(?<=\d%)
          | @[\w-]+(?:\.[\w-]+)+
          | ://[^\s<>"]*{_URL_END}
          | \.
            (?: (?=\w)
                (?: (?:[\w-]+\.){{0,4}}(?:{_TLD})\b(?:/[^\s<>"]*{_URL_END})?
                  | [\w.-]{{0,64}}@[\w-]+(?:\.[\w-]+)+
                  | (?<=\b[^\W\d_]\.)[^\W\d_]\b(?:\.[^\W\d_]\b)*\.?
                )
              | {_ABBREVIATION}
              | (?<=\b[A-HJ-Z]\.)(?=\s*[A-Z])
              | (?<=\b[Nn][Oo]\.)(?=\s*\d)
            )
          |
        )
      | \.\.*
      | [,"()]
      | {"|".join(_EMOTICON_OTHER)}
      | [!?][!?]*
      | …[…]*
      | --+
      | [\U0001f1e6-\U0001f1ff][\U0001f1e6-\U0001f1ff]
      | {_EMOJI_SEQUENCE}
      | [^{_BLANK_CLASS}]
    )
    """,
    re.X,
)
_words = _TOKEN.findall


# Dropped (not separators): won\u00adderful is one word, and direction overrides cannot reorder
# what the CSV or the report shows.
_IN_WORD_FORMAT = dict.fromkeys(
    [0xAD, 0x200C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2060, 0x2065),
     *range(0x2066, 0x206A), 0xFEFF]
)


# Chinese and Japanese put no spaces between words: a run of their characters was one token,
# a whole clause, which no vocabulary holds (every such text read as unknown words). Each
# ideograph and kana is a token of its own instead (a vocabulary of characters, as multilingual
# tokenizers treat ideographs). Sentences end at their end marks (。！？, or ! and ? right after
# such a character) and at the full stops and question marks of other scripts (Devanagari and
# Bengali ।॥, Arabic ؟ and Urdu ۔, Ethiopic ።), space or none, with the closing brackets and
# quotes that follow them: without, a Hindi review was one sentence, cut at max_words.
_CJK_CHARS = (
    r"\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff66-\uff9f"
    r"\U00020000-\U0002ceaf\U0002f800-\U0002fa1f"
)
_SCRIPT_ENDS = r"\u3002\uff01\uff1f\uff61\u0964\u0965\u061f\u06d4\u1362"
_CJK_CHAR = re.compile(rf"[{_CJK_CHARS}]")
_SCRIPT_END = re.compile(
    rf"(?:[{_SCRIPT_ENDS}]|(?<=[{_CJK_CHARS}])[!?])[{_SCRIPT_ENDS}!?]*"
    r"[\u300d\u300f\uff09\u3011\u300b\u3009”’\"]*"
)
_UNSPACED_OR_ENDS = re.compile(rf"[{_CJK_CHARS}{_SCRIPT_ENDS}]")


def _clean(text: str) -> str:
    # Entities first, so double-escaped markup (&lt;br&gt;) is treated as markup too.
    if "&" in text:
        text = html.unescape(text)
    if "<" in text:
        text = _INLINE_TAG.sub("", _BLOCK_TAG.sub("\n", text))
    if not text.isascii():
        text = unicodedata.normalize("NFC", text.translate(_IN_WORD_FORMAT))
        if _UNSPACED_OR_ENDS.search(text):
            text = _CJK_CHAR.sub(" \\g<0> ", _SCRIPT_END.sub("\\g<0>\n", text))
    return text


def _pieces(text: str) -> list[str]:
    parts = _SPLIT.split(_clean(text))
    pieces = [(piece + end).rstrip(_BLANK) for piece, end in zip(parts[:-1:2], parts[1::2])]
    pieces.append(parts[-1].rstrip(_BLANK))
    return pieces


def tokenize(text: str | None) -> list[list[str]]:
    """The document as sentences of word tokens (cleaned once: a double-escaped entity such as
    `&amp;lt;` is not unescaped twice). Empty/whitespace-only/None-like text gives []."""
    if not isinstance(text, str):
        return []
    return [words for words in map(_words, _pieces(text)) if words]


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Python's garbage collector paused: the many small lists made while tokenizing are never
    cyclic garbage, yet every collection walks all those still alive (measured 1.6x faster on
    the whole IMDb and Yelp sets)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def tokenize_all(texts: Iterable[str | None]) -> list[list[list[str]]]:
    """[tokenize(t) for t in texts], with the garbage collector paused meanwhile."""
    with gc_paused():
        return [tokenize(t) for t in texts]
