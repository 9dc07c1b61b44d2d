"""From labelled tables to padded batches: reading and splitting, encoding, bucketing, collate.

One path for every command: tokenize -> `index_tokens` (capped, ids into the documents' own
word list) -> `TokenizedDocs.encoded` (ids of the vocabulary) -> `WordBatch` -> `pad` (the
two: `collate`).
"""

from __future__ import annotations

import functools
import math
import multiprocessing
import os
import random
import sys
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, TypeVar

import numpy as np
import pyarrow as pa
import torch
from torch.utils.data import Dataset, Sampler

from hanclf.config import DataConfig
from hanclf.errors import UsageError
from hanclf.io import (
    column_values, has_column, read_table, release_unused_arrow_memory, require_columns, same_file, text_columns, text_values,
)
from hanclf.model import PAD, UNK
from hanclf.tokenize import gc_paused, tokenize
from hanclf.vocab import NotALabelSet, Vocab, as_text, normalize_labels
from hanclf.workers import become_worker, cores

SPLIT_COLUMN = "split"
TEXTS_PER_TASK = 2_048  # texts a worker process tokenizes at a time
MIN_TEXTS_PER_PROCESS = 4_096  # ~0.5 s of tokenizing, well above what forking a worker costs
BUCKET_POOL = 50  # batches sorted by size together; larger pools pad less but shuffle less


class EncodedDoc(NamedTuple):
    ids: np.ndarray  # (total words,) int32 word ids, sentence after sentence
    lengths: np.ndarray  # (sentences,) int32 words per sentence, each >= 1


def truncate(doc: list[list[str]], config: DataConfig) -> list[list[str]]:
    """The part of a tokenized document the model sees: first sentences, first words."""
    return [sentence[: config.max_words] for sentence in doc[: config.max_sentences]]


# Share of the words past the caps that train and predict note: the presets leave 4-5% of
# Yelp's and IMDb's unread (one sentence past max_words, mostly), tickets of thousands of words
# most of theirs.
UNREAD_NOTE_SHARE = 0.10


@dataclass(frozen=True)
class Truncation:
    """How much of some documents the caps (max_sentences, max_words) keep from the model."""

    documents: int = 0
    cut: int = 0  # documents with words past the caps
    words: int = 0  # all their words, read or not
    unread: int = 0  # words past the caps
    empty: int = 0  # documents with no words at all (markup or invisible characters only)

    def __add__(self, other: Truncation) -> Truncation:
        return Truncation(self.documents + other.documents, self.cut + other.cut,
                          self.words + other.words, self.unread + other.unread, self.empty + other.empty)

    @property
    def unread_share(self) -> float:
        return self.unread / max(1, self.words)

    def past_the_caps(self, config: DataConfig, whose: str) -> str:
        """The head of train's and predict's notes on it: the caps, then the share of `whose`
        words past them and the documents cut."""
        return (f"the model reads {config.max_sentences} sentences of {config.max_words} words at most "
                f"(data.max_sentences, data.max_words): {self.unread_share:.0%} of {whose} words are "
                f"past them, in {self.cut} of {self.documents} documents")


class TokenizedDocs(NamedTuple):
    """Tokenized documents as ids into a list of their distinct words: arrays plus each word
    once, so that a worker process sends back a fraction of what the token strings would take
    (unpickling a review's tokens cost as much as tokenizing it), and the vocabulary is built
    from `counts` alone."""

    words: list[str]  # distinct words, lowercased when config.lowercase; id k + 1 is words[k]
    counts: np.ndarray  # (words,) occurrences of each, truncated parts of documents included
    ids: np.ndarray  # (kept words,) int32 in 1..len(words), the kept words of every document
    lengths: np.ndarray  # (kept sentences,) int32 words kept of each sentence, each >= 1
    sentences: np.ndarray  # (documents,) int32 sentences kept of each document; 0 if no token
    unread: int  # tokens past the caps (max_sentences, max_words), which the model never sees
    cut: int  # documents with such tokens

    def truncation(self) -> Truncation:
        return Truncation(len(self.sentences), self.cut, len(self.ids) + self.unread, self.unread,
                          int((self.sentences == 0).sum()))

    def encoded(self, vocab: Vocab) -> list[EncodedDoc]:
        """Each document's ids in `vocab`. A document with no tokens is one sentence of a single
        PAD: its embedding is zero, so the model predicts from its biases alone instead of
        failing on an empty batch row."""
        get = vocab.index.get
        ids = np.array([PAD, *(get(w, UNK) for w in self.words)], dtype=np.int32)[self.ids]
        sentence_end = np.cumsum(self.sentences).tolist()
        word_end = np.concatenate([[0], np.cumsum(self.lengths)])[sentence_end].tolist()
        empty = EncodedDoc(np.array([PAD], dtype=np.int32), np.array([1], dtype=np.int32))
        docs, s0, w0 = [], 0, 0
        for s1, w1 in zip(sentence_end, word_end):
            docs.append(EncodedDoc(ids[w0:w1], self.lengths[s0:s1]) if s1 > s0 else empty)
            s0, w0 = s1, w1
        return docs


Counts = TypeVar("Counts", np.ndarray, torch.Tensor)


def _starts(counts: Counts) -> Counts:
    """Where each of consecutive runs of `counts` items starts (a 1-d array or tensor)."""
    return counts.cumsum(0) - counts


def index_tokens(
    docs: Iterable[list[list[str]]], config: DataConfig, read_partly: Sequence[int] = ()
) -> TokenizedDocs:
    """Tokenized documents as TokenizedDocs, keeping the part the model sees: the first
    config.max_sentences sentences of each, the first config.max_words words of each.
    `read_partly`: the documents whose text was cut before tokenizing (`readable`); their
    unread tokens are not known, and count as one each."""
    tokens: list[str] = []
    lengths: list[int] = []
    sentences: list[int] = []
    for doc in docs:
        sentences.append(len(doc))
        for sentence in doc:
            lengths.append(len(sentence))
            tokens += sentence
    # Ids in order of first use, in one pass of dict lookups over the tokens: a new spelling
    # gets the next id (the dict's size) as it is first met; then each distinct spelling is
    # lowercased once, rather than every token (bench/results/tokenize-cpu.md).
    id_of_spelling: defaultdict[str, int] = defaultdict()
    id_of_spelling.default_factory = id_of_spelling.__len__
    spelling_codes = np.fromiter(map(id_of_spelling.__getitem__, tokens), dtype=np.int64, count=len(tokens))
    keys = [w.lower() for w in id_of_spelling] if config.lowercase else list(id_of_spelling)
    words = list(dict.fromkeys(keys))
    id_of_word = dict(zip(words, range(len(words))))
    codes = np.fromiter(map(id_of_word.__getitem__, keys), dtype=np.int64, count=len(keys))[spelling_codes]
    word_lengths = np.array(lengths, dtype=np.int64)
    doc_sentences = np.array(sentences, dtype=np.int64)
    sentence_in_doc = np.arange(len(word_lengths)) - np.repeat(_starts(doc_sentences), doc_sentences)
    kept_sentence = sentence_in_doc < config.max_sentences  # (sentences,)
    word_in_sentence = np.arange(len(codes)) - np.repeat(_starts(word_lengths), word_lengths)
    kept_word = (word_in_sentence < config.max_words) & np.repeat(kept_sentence, word_lengths)
    cut_sentence = ~kept_sentence | (word_lengths > config.max_words)  # (sentences,)
    doc_of_sentence = np.repeat(np.arange(len(doc_sentences)), doc_sentences)
    return TokenizedDocs(
        words=words,
        counts=np.bincount(codes, minlength=len(words)),
        ids=(codes[kept_word] + 1).astype(np.int32),
        lengths=np.minimum(word_lengths, config.max_words)[kept_sentence].astype(np.int32),
        sentences=np.minimum(doc_sentences, config.max_sentences).astype(np.int32),
        unread=int(len(kept_word) - kept_word.sum()) + len(read_partly),
        cut=len(np.union1d(doc_of_sentence[cut_sentence], np.asarray(read_partly, dtype=np.int64))),
    )


# A text is read up to CHARS_PER_SLOT characters for each word the model can take
# (max_sentences x max_words; 100,000 characters for Yelp's 25 x 40), far past where the caps
# cut real text (the longest review of the three sets has 21,217 characters), so that one huge
# cell (a 20 MB log pasted into a ticket) is not tokenized whole: its tokens took ~24x its size
# in memory. Only a document whose sentences average over 100 characters per word slot (600+
# words each) loses sentences the model would have read.
CHARS_PER_SLOT = 100


def _readable_chars(config: DataConfig) -> int:
    """How many characters of a text are tokenized (see CHARS_PER_SLOT)."""
    return CHARS_PER_SLOT * config.max_sentences * config.max_words


def readable(text: str | None, config: DataConfig) -> str | None:
    """The part of `text` that is tokenized (see CHARS_PER_SLOT)."""
    limit = _readable_chars(config)
    return text[:limit] if isinstance(text, str) and len(text) > limit else text


def read_partly(texts: Sequence[str | None], config: DataConfig) -> list[int]:
    """The positions of the texts that `readable` cuts: what follows the cut is never read
    (say, a review after an inline image's 150,000 characters of base64), and must not pass
    for a document read whole."""
    limit = _readable_chars(config)
    return [i for i, text in enumerate(texts) if isinstance(text, str) and len(text) > limit]


def tokenize_texts(texts: Sequence[str | None], config: DataConfig) -> TokenizedDocs:
    with gc_paused():
        tokens = (tokenize(readable(text, config)) for text in texts)
        return index_tokens(tokens, config, read_partly(texts, config))


def vocabulary(parts: Iterable[TokenizedDocs], config: DataConfig) -> Vocab:
    """The vocabulary of the words counted in `parts` (config.min_count, config.max_vocab)."""
    counts: Counter[str] = Counter()
    for part in parts:
        counts.update(dict(zip(part.words, part.counts.tolist())))
    return Vocab.from_counts(counts, config.min_count, config.max_vocab, config.lowercase)


def tokenize_in_parallel(texts: Sequence[str | None], config: DataConfig) -> list[TokenizedDocs]:
    """tokenize_texts of consecutive slices of `texts`, in worker processes (one per core) when
    there are enough texts. Workers are forks of this process: they start at once with
    everything imported, and they only tokenize (a process that uses CUDA may fork such a
    child). Where fork is not available (Windows) or not safe (macOS) the slices are tokenized
    here."""
    slices = [texts[i : i + TEXTS_PER_TASK] for i in range(0, len(texts), TEXTS_PER_TASK)]
    processes = min(cores(), len(texts) // MIN_TEXTS_PER_PROCESS, len(slices))
    # macOS offers fork, but its system libraries (Accelerate, Objective-C) may run threads that
    # a fork's child cannot rely on, and this process already runs several (pyarrow's, torch's):
    # children may crash or hang, which is why Python starts processes there by spawning.
    if processes < 2 or sys.platform == "darwin" or "fork" not in multiprocessing.get_all_start_methods():
        return [tokenize_texts(part, config) for part in slices]
    with multiprocessing.get_context("fork").Pool(processes, initializer=become_worker, initargs=(os.getpid(),)) as pool:
        # One slice a task: map's own chunksize grows with the input (55 slices, 112,640 texts,
        # at 10^6 rows), and each worker held its task's texts and tokens whole.
        return pool.map(functools.partial(tokenize_texts, config=config), slices, chunksize=1)


class WordBatch(NamedTuple):
    """B documents' words back to back and the size of the grid they pad to: what `pad` turns
    into the model's inputs, and what predict's workers send (a tenth of the padded grid's bytes
    for IMDb reviews)."""

    ids: np.ndarray  # (Nw,) int32 word ids, sentence after sentence, document after document
    lengths: np.ndarray  # (N,) int64 words in each of the N sentences
    sentences: np.ndarray  # (B,) int64 sentences in each document
    grid: tuple[int, int]  # (S, W): the most sentences of a document, the longest sentence

    @classmethod
    def of(cls, docs: Sequence[EncodedDoc]) -> WordBatch:
        sentences = np.array([len(d.lengths) for d in docs], dtype=np.int64)
        lengths = np.concatenate([d.lengths for d in docs]).astype(np.int64)
        ids = np.concatenate([d.ids for d in docs])
        return cls(ids, lengths, sentences, (int(sentences.max()), int(lengths.max())))

    def wordless(self) -> np.ndarray:
        """(B,) bool: the documents with no word, each encoded as one sentence of one PAD."""
        first_word = _starts(self.lengths)[_starts(self.sentences)]
        return self.ids[first_word] == PAD


def pad(batch: WordBatch, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """The model's inputs on `device`: the words of `batch` placed in a (B, S, W) grid of ids.

    Every word's slot in the grid is computed at once for the whole batch (a Python loop over
    the documents took 21 us an IMDb review at batches of 1,024; this takes 3-4 on an idle
    CPU, the numpy version it replaced ~2).
    On a GPU the grid is filled there: only the words are copied, and since every size is known
    here no step waits for the GPU.
    """
    ids, lengths, sentences = (torch.as_tensor(a).to(device, non_blocking=True) for a in batch[:3])
    (S, W), B, N, Nw = batch.grid, len(sentences), len(lengths), len(ids)
    # Sentence n of the batch is sentence n - first[b] of its document b: slot b*S + that.
    first = _starts(sentences)  # (B,) index of each document's first sentence
    doc_offset = torch.arange(B, device=device) * S - first
    slot = torch.repeat_interleave(doc_offset, sentences, output_size=N) + torch.arange(N, device=device)
    # Likewise word k of the batch is word k - start[n] of its sentence n.
    start = _starts(lengths)  # (N,) index of each sentence's first word
    word_offset = slot * W - start
    word_slot = torch.repeat_interleave(word_offset, lengths, output_size=Nw) + torch.arange(Nw, device=device)
    tokens = torch.full((B * S * W,), PAD, dtype=torch.int64, device=device)
    tokens[word_slot] = ids.long()
    word_lengths = torch.zeros(B * S, dtype=torch.int64, device=device)
    word_lengths[slot] = lengths
    return {
        "tokens": tokens.view(B, S, W),
        "word_lengths": word_lengths.view(B, S),
        "sent_lengths": sentences,
        "sentence_slots": slot,  # (N,) the real sentences' places in (B, S)
    }


def collate(docs: Sequence[EncodedDoc]) -> dict[str, torch.Tensor]:
    """Pad B documents to (B, S, W): S the most sentences, W the longest sentence in the batch."""
    return pad(WordBatch.of(docs))


def doc_size(doc: EncodedDoc) -> int:
    """Padded area of a document alone, to batch similar documents together."""
    return len(doc.lengths) * int(doc.lengths.max())


def size_batches(docs: Sequence[EncodedDoc], max_docs: int, max_slots: int) -> list[list[int]]:
    """Indices of `docs` in batches for inference, smallest documents first: each batch holds at
    most `max_docs` documents and, padded to (B, S, W), at most `max_slots` word slots, unless
    one document alone has more. The slot cap bounds a batch's memory, which a cap on
    documents alone does not: 1,024 of the longest IMDb reviews pad to 2 million slots, 1,024
    typical ones to a fifth of that."""
    sentences = [len(d.lengths) for d in docs]
    words = [int(d.lengths.max()) for d in docs]
    order = sorted(range(len(docs)), key=lambda i: sentences[i] * words[i])
    batches: list[list[int]] = []
    batch: list[int] = []
    S = W = 0  # the batch's padded shape so far
    for i in order:
        s, w = max(S, sentences[i]), max(W, words[i])
        if batch and (len(batch) == max_docs or (len(batch) + 1) * s * w > max_slots):
            batches.append(batch)
            batch, s, w = [], sentences[i], words[i]
        batch.append(i)
        S, W = s, w
    if batch:
        batches.append(batch)
    return batches


Target = int | np.ndarray  # a class id, or a multi-hot row (labels,) for multi-label


class LabelledDocs(Dataset):
    def __init__(self, docs: list[EncodedDoc], targets: Sequence[Target]) -> None:
        self.docs, self.targets = docs, targets

    def __len__(self) -> int:
        return len(self.docs)

    def __getitem__(self, i: int) -> tuple[EncodedDoc, Target]:
        return self.docs[i], self.targets[i]


def collate_labelled(items: list[tuple[EncodedDoc, Target]]) -> dict[str, torch.Tensor]:
    batch = collate([doc for doc, _ in items])
    targets = [target for _, target in items]
    if isinstance(targets[0], np.ndarray):
        batch["labels"] = torch.from_numpy(np.stack(targets))  # (B, labels) float32
    else:
        batch["labels"] = torch.tensor(targets, dtype=torch.long)  # (B,)
    return batch


class BucketBatchSampler(Sampler[list[int]]):
    """Batches of similar-size documents (the paper reports ~3x faster training this way).

    With `shuffle`, each epoch draws a new order from (seed, epoch): documents are shuffled,
    sorted by size within pools of BUCKET_POOL batches, and the batches shuffled again.

    In a distributed run every process draws the same order. With `pad` (training), every
    process takes every `world_size`-th batch from `rank` on, batches from the start repeated so
    that all get as many (gradient averaging waits for all of them). Without it (validation),
    every process takes every `world_size`-th document and batches its own: each document is
    validated exactly once, and every process gets some as long as there are as many documents
    as processes (Lightning refuses a process with no batch).
    """

    def __init__(
        self, sizes: list[int], batch_size: int, shuffle: bool, seed: int = 0,
        rank: int = 0, world_size: int = 1, pad: bool = False, stream: int = 0,
    ) -> None:
        self.sizes = np.asarray(sizes)
        self.batch_size, self.shuffle, self.seed, self.epoch = batch_size, shuffle, seed, 0
        self.stream = stream  # draws independent of stream 0's (which has the plain seed's)
        self.rank, self.world_size, self.pad = rank, world_size, pad
        # Lightning calls set_epoch before every epoch on a loader's `sampler` and on its batch
        # sampler's `sampler` (as torch's BatchSampler has), never on the batch sampler itself:
        # without this every epoch drew the batches of epoch 0, in the same order.
        self.sampler = self

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        if self.pad:
            return math.ceil(math.ceil(len(self.sizes) / self.batch_size) / self.world_size)
        return math.ceil(len(range(self.rank, len(self.sizes), self.world_size)) / self.batch_size)

    def __iter__(self):
        # A generator, so that the epoch's order is drawn at its first batch: Lightning creates
        # a resumed run's first iterator before it calls set_epoch (which replayed epoch 0).
        key = (self.seed, self.epoch) if self.stream == 0 else (self.seed, self.epoch, self.stream)
        rng = np.random.default_rng(key)
        order = rng.permutation(len(self.sizes)) if self.shuffle else np.arange(len(self.sizes))
        if not self.pad:
            order = order[self.rank :: self.world_size]
        pool = self.batch_size * BUCKET_POOL
        batches = []
        for start in range(0, len(order), pool):
            chunk = order[start : start + pool]
            chunk = chunk[np.argsort(self.sizes[chunk], kind="stable")]
            batches += [chunk[i : i + self.batch_size].tolist() for i in range(0, len(chunk), self.batch_size)]
        if self.shuffle:
            rng.shuffle(batches)
        if self.pad:
            padded = [batches[i % len(batches)] for i in range(len(self) * self.world_size)]
            batches = padded[self.rank :: self.world_size]
        yield from batches


class MemberBatchSampler(Sampler[list[list[int]]]):
    """A batch for each member of an ensemble at every step, from one BucketBatchSampler each
    (streams 0, 1, ...: member 0 draws what a single model would), so that members also differ
    in the order and company in which they see the documents, as separately trained models do.
    Each step is a list of index lists; `MemberDocs` fetches them."""

    def __init__(self, samplers: list[BucketBatchSampler]) -> None:
        self.samplers = samplers
        self.sampler = self  # where Lightning calls set_epoch (see BucketBatchSampler)

    def set_epoch(self, epoch: int) -> None:
        for sampler in self.samplers:
            sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.samplers[0])  # the same for every stream: the same documents

    def __iter__(self):
        return map(list, zip(*self.samplers))


class MemberDocs(Dataset):
    """LabelledDocs fetched a whole batch at a time: the DataLoader asks for each member's batch
    of a MemberBatchSampler step in turn, and collate_members pads each on its own."""

    def __init__(self, docs: LabelledDocs) -> None:
        self.docs = docs

    def __getitem__(self, batch: list[int]) -> list[tuple[EncodedDoc, Target]]:
        return [self.docs[i] for i in batch]


def collate_members(batches: list[list[tuple[EncodedDoc, Target]]]) -> list[dict[str, torch.Tensor]]:
    return [collate_labelled(items) for items in batches]


def require_split_column(path: Path, split: str | None) -> None:
    if split is not None and not has_column(path, SPLIT_COLUMN):
        raise UsageError(f"{path}: --split {split} given but the file has no '{SPLIT_COLUMN}' column")


# Other names of the validation split: Hugging Face's, and the common short ones.
SPLIT_SYNONYMS = {"validation": "valid", "dev": "valid", "val": "valid"}
SPLITS = ("train", "valid", "test")
VALID_SYNONYMS = ", ".join(SPLIT_SYNONYMS)  # for messages


def _split_name(value: object) -> str:
    name = as_text(value).strip().lower()
    return SPLIT_SYNONYMS.get(name, name)


def check_split_values(path: Path, values: list) -> None:
    """Refuse split values other than train, valid (or a synonym) and test: those rows would be
    left out of training and validation without a word."""
    others = Counter("null" if v is None else repr(as_text(v).strip()) for v in values
                     if v is None or _split_name(v) not in SPLITS)
    if others:
        shown = ", ".join(f"{name} ({n} row{'s' * (n > 1)})" for name, n in others.most_common(5))
        raise UsageError(
            f"{path}: column '{SPLIT_COLUMN}' holds {shown} besides train, valid (or "
            f"{VALID_SYNONYMS}) and test; rename or drop those rows"
        )


def row_name(position: int) -> str:
    """A row for messages: counted from 1, as a person counts, and from 0 as pandas' iloc and
    predict's row_id count."""
    return f"row {position + 1} (iloc {position})"


def rows_in_split(values: list, split: str, seen: set[str | None] | None = None) -> list[int]:
    """Positions whose split value is `split` (case, surrounding spaces and the synonyms of
    'valid' aside); `seen` collects the values met, for `no_rows_in_split`."""
    wanted = _split_name(split)
    names = [None if v is None else _split_name(v) for v in values]
    if seen is not None:
        seen.update(names)
    return [i for i, name in enumerate(names) if name == wanted]


def no_rows_in_split(path: Path, split: str | None, seen: set[str | None]) -> UsageError:
    """The error for a command that found no rows to work on (of `split`, if given)."""
    if split is None:
        return UsageError(f"{path}: has no rows")
    values = sorted(seen, key=lambda v: (v is None, v or ""))
    return UsageError(f"{path}: has no rows with {SPLIT_COLUMN}={split} (its values: "
                      f"{', '.join('null' if v is None else repr(v) for v in values) or 'none'}); "
                      "choose one with --split")


class LabelledSet(NamedTuple):
    texts: list[str]
    labels: list[str] | list[list[str]]  # multi-label: a sorted list of labels per document
    where: str  # the file (and split) the rows came from, for messages
    rows: Sequence[int]  # each document's position in that file, for messages


def read_labelled(path: Path, config: DataConfig, split: str | None = None) -> LabelledSet:
    """Texts and labels of `path`; with `split`, only rows whose split column has that value."""
    require_columns(path, {"--text-column": config.text_column, "--label-column": config.label_column})
    has_split = split is not None and has_column(path, SPLIT_COLUMN)
    text_names = text_columns(config.text_column)
    columns = [*text_names, config.label_column] + ([SPLIT_COLUMN] if has_split else [])
    table = read_table(path, columns)
    where = str(path)
    rows: Sequence[int] = range(table.num_rows)  # the file's positions of the rows kept, for messages
    if has_split:
        splits = column_values(path, table, SPLIT_COLUMN)
        check_split_values(path, splits)
        rows = rows_in_split(splits, split)
        where = f"{path} (split={split})"
        # Only the split's rows become Python strings: train reads the file once for each
        # split, and the strings of the other splits' rows, dropped at once, left memory
        # scattered among the kept ones that the process held to the end.
        # filter, not take: take joins each column's chunks into one array first, which fails
        # for text past 2 GiB ("offset overflow") and copies the other splits' text too.
        kept = np.zeros(table.num_rows, dtype=bool)
        kept[rows] = True
        table = table.filter(pa.array(kept))
        release_unused_arrow_memory()
    texts = text_values(path, config.text_column, table)
    raw_labels = column_values(path, table, config.label_column)
    del table
    # The Arrow table took as much memory as the strings made of it; Arrow's allocator would
    # keep it from the rest of the training otherwise.
    release_unused_arrow_memory()
    try:
        labels = normalize_labels(raw_labels, config.multi_label, config.label_separator)
    except NotALabelSet as error:
        raise not_a_label_set(where, rows[error.index], config.label_column, error) from None
    # Every such row counted, not the first alone: a user deciding to fill or drop them needs
    # to know whether there are 2 or 20,000.
    unlabelled = [rows[i] for i, label in enumerate(labels) if label is None]  # never multi-label: no label is the empty set
    if unlabelled:
        raise no_label(where, unlabelled, config.label_column)
    textless = [rows[i] for i, text in enumerate(texts) if text is None or not text.strip()]
    if textless:
        raise UsageError(
            f"{where}: {_rows_have(textless)} empty text in "
            f"column{'s' * (len(text_names) > 1)} {', '.join(map(repr, text_names))}; "
            "fill or drop such rows"
        )
    return LabelledSet(texts, labels, where, rows)


def not_a_label_set(where: str, row: int, label_column: str, error: NotALabelSet) -> UsageError:
    return UsageError(f"{where}: {row_name(row)} {error} in column '{label_column}'; give each "
                      "document's labels as a list of labels, or as text joined by --label-separator")


def no_label(where: str, rows: list[int], label_column: str) -> UsageError:
    """The error for rows (positions in the file) with no label, named as `_rows_have` does."""
    return UsageError(f"{where}: {_rows_have(rows)} no label in column '{label_column}'; "
                      "fill or drop unlabelled rows")


def _rows_have(rows: list[int]) -> str:
    """'row 5 (iloc 4) has', or '48 rows, the first row 24 (iloc 23), have'."""
    if len(rows) == 1:
        return f"{row_name(rows[0])} has"
    return f"{len(rows)} rows, the first {row_name(rows[0])}, have"


def training_sets(
    train_path: Path, valid_path: Path | None, config: DataConfig, seed: int
) -> tuple[LabelledSet, LabelledSet]:
    """Train and valid sets: from --valid, else the split column, else a seeded random share."""
    if valid_path is not None and same_file(valid_path, train_path) and (
        not has_column(train_path, SPLIT_COLUMN)
    ):
        raise UsageError(
            f"{valid_path}: --valid names the training file, which has no '{SPLIT_COLUMN}' "
            "column: every row would be validated on after training on it; give another file, "
            "or leave out --valid to hold out a random share"
        )
    # The id column is predict's to copy: checked where training reads it from, not in --valid.
    # '' is none (as predict's and explain's --id-column ''), e.g. over a config that names one.
    require_columns(train_path, {"--id-column": config.id_column or None})
    train = read_labelled(train_path, config, split="train")
    if valid_path is not None:
        valid = read_labelled(valid_path, config, split="valid")
        if not valid.texts:
            raise UsageError(
                f"{valid_path}: its '{SPLIT_COLUMN}' column has no 'valid' row (nor {VALID_SYNONYMS}), and "
                f"--valid reads only those (every row of a file without a '{SPLIT_COLUMN}' column)"
            )
    elif has_column(train_path, SPLIT_COLUMN):
        valid = read_labelled(train_path, config, split="valid")
    else:
        valid = None
    if not train.texts:
        raise UsageError(f"{train.where}: no training rows")
    if valid is None or not valid.texts:
        train_rows, valid_rows = _held_out(train.labels, config, seed)
        if not valid_rows or len(train_rows) < 2:
            raise UsageError(f"{train.where}: too few rows to hold out a validation set; add "
                             "rows, or give validation rows (--valid FILE, or a split column)")

        def subset(rows: list[int], where: str) -> LabelledSet:
            return LabelledSet([train.texts[i] for i in rows], [train.labels[i] for i in rows], where,
                               [train.rows[i] for i in rows])

        valid = subset(valid_rows, f"{train.where} (random {config.valid_fraction:.0%})")
        train = subset(train_rows, train.where)
    return train, valid


def _held_out(labels: list, config: DataConfig, seed: int) -> tuple[list[int], list[int]]:
    """Rows to train and to validate on when the data names none, both in a seeded random
    order: config.valid_fraction of them to validate, passing over a row whose label (or,
    multi-label, one of whose labels) would be left with no row to train on. Validating on a
    label that training never saw fails, so it used to depend on the seed whether data with a
    rare label could be trained on at all."""
    order = list(range(len(labels)))
    random.Random(seed).shuffle(order)
    labels_of = labels if config.multi_label else [[label] for label in labels]
    left_to_train = Counter(label for row in labels_of for label in row)
    wanted = max(1, round(len(order) * config.valid_fraction))
    held: list[int] = []
    for i in order:
        if len(held) == wanted:
            break
        if all(left_to_train[label] > 1 for label in labels_of[i]):
            left_to_train.subtract(labels_of[i])
            held.append(i)
    valid_rows = set(held)
    return [i for i in order if i not in valid_rows], held
