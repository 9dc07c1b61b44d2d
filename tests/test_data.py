"""Encoding, padding, bucketing and the train/valid split."""

from __future__ import annotations

import itertools
import json
import multiprocessing.pool
import subprocess
import sys
import weakref
from collections import Counter

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import hanclf.data
from hanclf.config import DataConfig
from hanclf.data import (
    BUCKET_POOL,
    BucketBatchSampler,
    EncodedDoc,
    LabelledDocs,
    MemberBatchSampler,
    MemberDocs,
    collate,
    collate_labelled,
    collate_members,
    doc_size,
    index_tokens,
    read_labelled,
    size_batches,
    tokenize_in_parallel,
    tokenize_texts,
    training_sets,
    vocabulary,
)
from hanclf.errors import UsageError
from hanclf.model import PAD, UNK
from hanclf.tokenize import tokenize
from hanclf.vocab import PAD_TOKEN, Vocab

VOCAB = Vocab(["a", "b", "c", "d", "e", "f"], lowercase=True)  # a=2 ... f=7


# --- encode and collate ---------------------------------------------------------------------


def encode(doc: list[list[str]], config: DataConfig) -> EncodedDoc:
    return index_tokens([doc], config).encoded(VOCAB)[0]


def test_encode_keeps_first_sentences_and_first_words():
    doc = [["a", "b", "c", "d"], ["E"], ["f", "zzz", "a"], ["b"]]
    encoded = encode(doc, DataConfig(max_sentences=3, max_words=2))
    assert encoded.lengths.tolist() == [2, 1, 2]
    assert encoded.ids.tolist() == [2, 3, 6, 7, UNK]
    assert encoded.ids.dtype == np.int32 and encoded.lengths.dtype == np.int32


def test_encode_short_document_unchanged():
    encoded = encode([["a", "b"], ["c"]], DataConfig(max_sentences=30, max_words=50))
    assert encoded.ids.tolist() == [2, 3, 4] and encoded.lengths.tolist() == [2, 1]


def test_empty_document_is_one_pad_sentence():
    encoded = encode([], DataConfig())
    assert encoded.ids.tolist() == [PAD] and encoded.lengths.tolist() == [1]


def test_a_huge_text_is_tokenized_only_as_far_as_the_model_could_read(monkeypatch):
    # A 20 MB text was tokenized whole (~24x its size in memory) to keep 1,500 words of it.
    config = DataConfig(max_sentences=3, max_words=4)
    limit = hanclf.data.CHARS_PER_SLOT * 3 * 4
    seen = []
    monkeypatch.setattr(hanclf.data, "tokenize", lambda text: seen.append(text) or tokenize(text))
    huge = "A b c d e f. " * 100_000
    docs = tokenize_texts([huge, "short text.", None], config)
    assert [len(text) if text else text for text in seen] == [limit, 11, None]
    # What the model reads is what tokenizing the whole text gave.
    assert docs.encoded(VOCAB)[0].ids.tolist() == index_tokens([tokenize(huge)], config).encoded(VOCAB)[0].ids.tolist()
    assert docs.sentences.tolist() == [3, 1, 0]


def test_a_text_cut_before_tokenizing_counts_as_cut():
    # An inline image's base64 longer than the part tokenized: the review after it was never
    # read, and the counts said the document had been read whole (0 unread, 0 cut).
    config = DataConfig(max_sentences=3, max_words=4)  # 1,200 characters tokenized
    imaged = "QUJD" * 400 + " The salmon was superb."  # the cut part: one word, within the caps
    long_and_capped = "A b c d e f. " * 1_000  # cut by the caps too: one document, counted once
    docs = tokenize_texts([imaged, "Short text.", long_and_capped], config)
    assert docs.cut == 2
    capped_only = tokenize_texts([long_and_capped[:1_200]], config)
    assert docs.unread == 1 + capped_only.unread + 1


def plain_encode(doc: list[list[str]], vocab: Vocab, config: DataConfig) -> tuple[list, list]:
    """The reference: truncate, then look every kept word up, one at a time."""
    kept = [sentence[: config.max_words] for sentence in doc[: config.max_sentences]] or [[PAD_TOKEN]]
    ids = [PAD if w == PAD_TOKEN else vocab.index.get(w.lower() if vocab.lowercase else w, UNK)
           for s in kept for w in s]
    return ids, [len(s) for s in kept]


@pytest.mark.parametrize("lowercase", [True, False])
def test_index_tokens_counts_every_word_and_encodes_like_one_lookup_at_a_time(lowercase):
    rng = np.random.default_rng(2)
    pool = ["a", "A", "b", "Café", "café", "ß", "the", "The", "zzz", "İ", "Σ"]
    docs = [[[str(w) for w in rng.choice(pool, size=rng.integers(1, 9))]
             for _ in range(rng.integers(0, 7))] for _ in range(200)]
    config = DataConfig(max_sentences=4, max_words=5, lowercase=lowercase)
    tokenized = index_tokens(docs, config)
    every_word = Counter(w.lower() if lowercase else w for d in docs for s in d for w in s)
    assert dict(zip(tokenized.words, tokenized.counts.tolist())) == every_word
    vocab = vocabulary([tokenized], DataConfig(min_count=2, max_vocab=8, lowercase=lowercase))
    assert vocab.words == Vocab.from_counts(every_word, 2, 8, lowercase).words
    encoded = tokenized.encoded(vocab)
    assert len(encoded) == len(docs)
    for doc, got in zip(docs, encoded):
        ids, lengths = plain_encode(doc, vocab, config)
        assert (got.ids.tolist(), got.lengths.tolist()) == (ids, lengths)


def test_tokenizing_in_worker_processes_gives_what_one_process_gives(monkeypatch):
    texts = [f"Review {i}. It was {'good' if i % 3 else 'BAD'}! See www.example.com, {i % 7}/10."
             for i in range(90)] + ["", None]
    config = DataConfig(max_sentences=2, max_words=4)
    alone = tokenize_texts(texts, config)
    vocab = Vocab.from_counts(dict(zip(alone.words, alone.counts.tolist())), 1, 100, True)
    monkeypatch.setattr(hanclf.data, "TEXTS_PER_TASK", 16)
    monkeypatch.setattr(hanclf.data, "MIN_TEXTS_PER_PROCESS", 10)
    monkeypatch.setattr(hanclf.data, "cores", lambda: 3)
    started = []
    real_pool = multiprocessing.pool.Pool.__init__

    def pool(self, processes=None, *args, **kwargs):
        started.append(processes)
        real_pool(self, processes, *args, **kwargs)

    monkeypatch.setattr(multiprocessing.pool.Pool, "__init__", pool)
    tasks = []
    real_map = multiprocessing.pool.Pool.map

    def map_tasks(self, func, iterable, chunksize=None):
        tasks.append(chunksize)
        return real_map(self, func, iterable, chunksize)

    monkeypatch.setattr(multiprocessing.pool.Pool, "map", map_tasks)
    parts = tokenize_in_parallel(texts, config)
    assert started == [3] and len(parts) == 6  # 92 texts in slices of 16, on 3 processes
    assert tasks == [1]  # a slice a task: map's own chunksize grows with the input
    counts = Counter()
    for part in parts:
        counts.update(dict(zip(part.words, part.counts.tolist())))
    assert counts == Counter(dict(zip(alone.words, alone.counts.tolist())))
    merged = vocabulary(parts, config).words
    assert merged == vocabulary([alone], config).words and len(merged) > 10
    together = [doc for part in parts for doc in part.encoded(vocab)]
    for a, b in zip(alone.encoded(vocab), together, strict=True):
        assert a.ids.tolist() == b.ids.tolist() and a.lengths.tolist() == b.lengths.tolist()


# Forked tokenizing workers under the CLI's SIGTERM handler (which raises KeyboardInterrupt):
# the pool stops its workers with SIGTERM at every exit, and each one printed a traceback.
SIGTERM_HANDLER_SCRIPT = """
import signal
import hanclf.data
from hanclf.cli import main as cli
from hanclf.config import DataConfig
cli._work_began.set()  # as inside a command's work, where the handler raises
signal.signal(signal.SIGTERM, cli._on_stop_signal)
hanclf.data.cores = lambda: 2
texts = ["Good food, bad service!"] * (2 * hanclf.data.MIN_TEXTS_PER_PROCESS)  # one sentence each
for _ in range(5):
    parts = hanclf.data.tokenize_in_parallel(texts, DataConfig())
print(sum(len(part.lengths) for part in parts))
"""


# A main process killed outright (the OOM killer) while its workers tokenize.
KILLED_MAIN_SCRIPT = """
import multiprocessing, os, signal, time
from hanclf.workers import become_worker
pool = multiprocessing.get_context("fork").Pool(1, initializer=become_worker, initargs=(os.getpid(),))
print(pool.apply(os.getpid), flush=True)
pool.apply_async(time.sleep, (0.5,))  # a task under way
time.sleep(0.1)
os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the kernel's parent-death signal is Linux's")
def test_a_killed_main_process_takes_its_forked_workers_with_it_quietly():
    # A worker finished its task, found the pipe to the dead main process broken, and printed
    # a traceback into the job's log (about 30 lines each).
    run = subprocess.Popen([sys.executable, "-c", KILLED_MAIN_SCRIPT], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    assert int(run.stdout.readline()) > 0  # the worker's pid: it is running
    run.wait(timeout=60)
    assert run.stderr.read() == ""  # read to the end: once the worker, which shares it, is gone


def test_the_parent_death_signal_is_asked_for_on_linux_only(monkeypatch):
    # On Windows ctypes.CDLL(None) raises TypeError: every worker's start failed.
    import ctypes

    import hanclf.workers

    def no_cdll(name):
        raise TypeError("argument of type 'NoneType' is not iterable")

    monkeypatch.setattr(ctypes, "CDLL", no_cdll)
    monkeypatch.setattr(sys, "platform", "win32")
    hanclf.workers._die_with_parent()  # no error


@pytest.mark.slow
def test_tokenizing_workers_stop_quietly_under_the_clis_sigterm_handler():
    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("tokenizing workers are forks")
    run = subprocess.run([sys.executable, "-c", SIGTERM_HANDLER_SCRIPT], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == [str(2 * hanclf.data.MIN_TEXTS_PER_PROCESS)]
    assert "Traceback" not in run.stderr and "KeyboardInterrupt" not in run.stderr, run.stderr


def test_collate_shapes_and_contents():
    docs = [
        encode([["a", "b", "c"], ["d"]], DataConfig()),
        encode([["e"]], DataConfig()),
        encode([["f"], ["a"], ["b", "c"]], DataConfig()),
    ]
    batch = collate(docs)
    assert batch["tokens"].shape == (3, 3, 3)  # 3 docs, at most 3 sentences, at most 3 words
    assert batch["tokens"].tolist() == [
        [[2, 3, 4], [5, 0, 0], [0, 0, 0]],
        [[6, 0, 0], [0, 0, 0], [0, 0, 0]],
        [[7, 0, 0], [2, 0, 0], [3, 4, 0]],
    ]
    assert batch["word_lengths"].tolist() == [[3, 1, 0], [1, 0, 0], [1, 1, 2]]
    assert batch["sent_lengths"].tolist() == [2, 1, 3]
    assert batch["sentence_slots"].tolist() == [0, 1, 3, 6, 7, 8]  # b * 3 + s of real sentences
    assert doc_size(docs[0]) == 2 * 3


def test_collate_puts_every_word_in_its_slot_for_random_batches():
    # Documents of 1-7 sentences of 1-9 words; each sentence's ids checked against its own
    # row of the grid, and every other slot against padding.
    rng = np.random.default_rng(0)
    for _ in range(50):
        docs = []
        for _ in range(rng.integers(1, 9)):
            lengths = rng.integers(1, 10, size=rng.integers(1, 8)).astype(np.int32)
            docs.append(EncodedDoc(rng.integers(2, 100, size=lengths.sum()).astype(np.int32), lengths))
        batch = collate(docs)
        tokens, word_lengths = batch["tokens"].numpy(), batch["word_lengths"].numpy()
        assert tokens.shape == (len(docs), max(len(d.lengths) for d in docs),
                                max(d.lengths.max() for d in docs))
        expected = np.full(tokens.shape, PAD)
        for b, doc in enumerate(docs):
            words = np.split(doc.ids, np.cumsum(doc.lengths)[:-1])
            for s, sentence in enumerate(words):
                expected[b, s, : len(sentence)] = sentence
            assert word_lengths[b].tolist() == doc.lengths.tolist() + [0] * (tokens.shape[1] - len(doc.lengths))
        assert (tokens == expected).all()
        assert batch["sent_lengths"].tolist() == [len(d.lengths) for d in docs]


def test_collate_labelled_adds_labels():
    doc = encode([["a"]], DataConfig())
    batch = collate_labelled([(doc, 2), (doc, 0)])
    assert batch["labels"].tolist() == [2, 0]
    assert batch["tokens"].shape == (2, 1, 1)


def test_size_batches_cap_documents_and_padded_slots():
    rng = np.random.default_rng(1)
    docs = [EncodedDoc(np.ones(n.sum(), np.int32), n)
            for n in (rng.integers(1, 30, size=rng.integers(1, 12)).astype(np.int32) for _ in range(300))]
    batches = size_batches(docs, max_docs=16, max_slots=600)
    assert sorted(i for b in batches for i in b) == list(range(300))  # each document once
    for batch in batches:
        S = max(len(docs[i].lengths) for i in batch)
        W = max(docs[i].lengths.max() for i in batch)
        assert len(batch) <= 16 and (len(batch) == 1 or len(batch) * S * W <= 600)
    areas = [doc_size(docs[i]) for b in batches for i in b]
    assert areas == sorted(areas)  # smallest first, so that similar sizes share a batch
    # a batch is closed only when the next document would break a cap
    for batch, after in zip(batches, batches[1:]):
        i = after[0]
        S = max(len(docs[j].lengths) for j in batch + [i])
        W = max(docs[j].lengths.max() for j in batch + [i])
        assert len(batch) == 16 or (len(batch) + 1) * S * W > 600
    everything = size_batches(docs, max_docs=1000, max_slots=10**9)
    assert everything == [sorted(range(300), key=lambda i: doc_size(docs[i]))]


# --- BucketBatchSampler -------------------------------------------------------------------


SIZES = [int(x) for x in np.random.default_rng(0).integers(1, 500, 250)]


def batches(sampler: BucketBatchSampler, epoch: int = 0) -> list[list[int]]:
    sampler.set_epoch(epoch)
    return list(sampler)


@pytest.mark.parametrize("shuffle", [True, False])
def test_every_index_once_per_epoch(shuffle):
    sampler = BucketBatchSampler(SIZES, batch_size=8, shuffle=shuffle, seed=3)
    for epoch in range(3):
        got = batches(sampler, epoch)
        assert sorted(i for b in got for i in b) == list(range(250))
        assert len(got) == len(sampler) == 32  # ceil(250 / 8)
        assert all(len(b) <= 8 for b in got)
        assert sum(len(b) == 8 for b in got) == 31


def test_unshuffled_order_is_sorted_by_size_per_pool():
    # batch_size 2 -> pools of 2 * BUCKET_POOL documents (100: [0, 100), [100, 200), [200, 250))
    pool = 2 * BUCKET_POOL
    assert pool < len(SIZES)
    got = batches(BucketBatchSampler(SIZES, batch_size=2, shuffle=False))
    flat = [i for b in got for i in b]
    expected = [i for start in range(0, len(SIZES), pool)
                for i in sorted(range(start, min(start + pool, len(SIZES))), key=SIZES.__getitem__)]
    assert flat == expected  # stable sort: equal sizes keep index order
    assert got == batches(BucketBatchSampler(SIZES, batch_size=2, shuffle=False), epoch=5)


def test_shuffled_batches_hold_similar_sizes():
    # all 250 docs fit in one pool: the batches cut one size-sorted list, so they don't overlap
    assert len(SIZES) <= 8 * BUCKET_POOL
    got = batches(BucketBatchSampler(SIZES, batch_size=8, shuffle=True, seed=1))
    spans = sorted((min(SIZES[i] for i in b), max(SIZES[i] for i in b)) for b in got)
    assert all(hi <= next_lo for (_, hi), (next_lo, _) in itertools.pairwise(spans))
    for b in got:
        assert [SIZES[i] for i in b] == sorted(SIZES[i] for i in b)
    # batch order is shuffled, not smallest first
    assert [min(SIZES[i] for i in b) for b in got] != [lo for lo, _ in spans]


def test_shuffle_depends_on_seed_and_epoch_only():
    def order(seed, epoch):
        return batches(BucketBatchSampler(SIZES, batch_size=8, shuffle=True, seed=seed), epoch)

    assert order(7, 0) == order(7, 0)
    assert order(7, 4) == order(7, 4)
    assert order(7, 0) != order(7, 1)
    assert order(7, 0) != order(8, 0)
    sampler = BucketBatchSampler(SIZES, batch_size=8, shuffle=True, seed=7)
    assert batches(sampler, 2) == batches(sampler, 2)  # iterating again repeats the epoch


@pytest.mark.parametrize("world_size", [2, 3, 5])
def test_validation_shards_cover_every_document_exactly_once(world_size):
    samplers = [BucketBatchSampler(SIZES, 8, shuffle=False, rank=r, world_size=world_size)
                for r in range(world_size)]
    shards = [batches(s) for s in samplers]
    assert sorted(i for shard in shards for b in shard for i in b) == list(range(250))
    assert [len(shard) for shard in shards] == [len(s) for s in samplers]
    # process r validates documents r, r + world_size, ...
    assert sorted(i for b in shards[1] for i in b) == list(range(1, 250, world_size))


def test_every_process_validates_something_even_with_one_batch_of_documents():
    # 10 documents, batches of 64: one batch in one process; two processes must both get one
    shards = [batches(BucketBatchSampler(SIZES[:10], 64, shuffle=False, rank=r, world_size=2))
              for r in range(2)]
    assert [len(s) for s in shards] == [1, 1]
    assert sorted(shards[0][0] + shards[1][0]) == list(range(10))


@pytest.mark.parametrize("world_size", [2, 3, 5])
def test_training_shards_are_equal_in_length_and_cover_every_document(world_size):
    for epoch in range(2):
        shards = [batches(BucketBatchSampler(SIZES, 8, shuffle=True, seed=4, rank=r,
                                             world_size=world_size, pad=True), epoch)
                  for r in range(world_size)]
        lengths = {len(shard) for shard in shards}
        assert lengths == {-(-32 // world_size)}  # ceil(32 batches / world_size) each
        seen = [i for shard in shards for b in shard for i in b]
        assert set(seen) == set(range(250))
        assert len(seen) - 250 <= (world_size - 1) * 8  # only the padding batches repeat
        # the same draw in every process: rank r's batches are the single run's r-th ones
        single = batches(BucketBatchSampler(SIZES, 8, shuffle=True, seed=4), epoch)
        assert shards[0][: len(single[0::world_size])] == single[0::world_size]


def test_training_shards_with_fewer_batches_than_processes():
    # one batch of documents, four processes: each trains on that batch (repeated), none idle
    shards = [batches(BucketBatchSampler(SIZES[:10], 64, shuffle=True, rank=r, world_size=4, pad=True))
              for r in range(4)]
    assert [len(s) for s in shards] == [1, 1, 1, 1]
    assert all(sorted(s[0]) == list(range(10)) for s in shards)


def test_each_member_of_an_ensemble_gets_its_own_draw_of_batches():
    def draw(stream: int) -> BucketBatchSampler:
        return BucketBatchSampler(SIZES, 8, shuffle=True, seed=5, pad=True, stream=stream)

    members = MemberBatchSampler([draw(0), draw(1), draw(2)])
    for epoch in (0, 1):
        steps = batches(members, epoch)  # set_epoch reaches every stream
        assert len(steps) == len(members) == len(draw(0)) and all(len(step) == 3 for step in steps)
        by_member = [[step[m] for step in steps] for m in range(3)]
        assert by_member[0] == batches(draw(0), epoch)  # member 0: what a single model draws
        for draws in by_member:  # every member sees every document once an epoch...
            assert sorted(i for batch in draws for i in batch) == list(range(len(SIZES)))
        assert by_member[1] != by_member[0] and by_member[2] != by_member[1]  # ...in its own order
    assert batches(members, 0) != batches(members, 1)


def test_member_batches_collate_each_member_on_its_own():
    docs = [EncodedDoc(np.arange(1, n + 1, dtype=np.int32), np.array([n], dtype=np.int32)) for n in (2, 5, 3)]
    dataset = MemberDocs(LabelledDocs(docs, [0, 1, 2]))
    step = collate_members([dataset[[0, 2]], dataset[[1]]])
    assert [b["labels"].tolist() for b in step] == [[0, 2], [1]]
    assert [tuple(b["tokens"].shape) for b in step] == [(2, 1, 3), (1, 1, 5)]


# --- reading and splitting ------------------------------------------------------------------


def frame(n: int, **extra) -> pd.DataFrame:
    return pd.DataFrame({"text": [f"document {i}" for i in range(n)],
                         "label": [["pos", "neg"][i % 2] for i in range(n)], **extra})


def test_split_column(tmp_path):
    splits = ["train", "valid", "test", " Valid ", "TRAIN", "train", "test", "valid"]
    path = tmp_path / "data.csv"
    frame(8, split=splits).to_csv(path, index=False)
    train, valid = training_sets(path, None, DataConfig(), seed=0)
    assert train.texts == ["document 0", "document 4", "document 5"]
    assert train.labels == ["pos", "pos", "neg"]
    assert valid.texts == ["document 1", "document 3", "document 7"]
    assert valid.where == f"{path} (split=valid)"


@pytest.mark.parametrize("name", ["dev", "val", "validation", " Dev "])
def test_dev_and_validation_name_the_valid_split(tmp_path, name):
    path = tmp_path / "data.csv"
    frame(6, split=["train", name, "test", "train", name, "train"]).to_csv(path, index=False)
    train, valid = training_sets(path, None, DataConfig(), seed=0)
    assert valid.texts == ["document 1", "document 4"] and len(train.texts) == 3


def test_split_values_other_than_train_valid_test_are_refused(tmp_path):
    # Such rows were left out of training without a word, and a random share of train held out.
    path = tmp_path / "data.parquet"
    frame(7, split=["train", "holdout", "train", None, "valid", "holdout", "test"]).to_parquet(path)
    with pytest.raises(UsageError) as err:
        training_sets(path, None, DataConfig(), seed=0)
    message = str(err.value)
    assert str(path) in message and "'holdout' (2 rows)" in message and "null (1 row)" in message


@pytest.mark.parametrize("labels", [
    ["pos"] * 30 + ["neg"] * 20 + ["rare"] + ["pair"] * 2,
    [f"label{i % 20}" for i in range(80)],  # many small labels: the share stays a tenth
    ["a", "b", "c", "d"] * 2 + ["e"] * 52,
])
def test_random_hold_out_leaves_every_label_in_train(tmp_path, labels):
    # A label of one row used to fail training with some seeds: held out, it was not trained on.
    path = tmp_path / "data.csv"
    pd.DataFrame({"text": [f"document {i}" for i in range(len(labels))], "label": labels}).to_csv(path, index=False)
    for seed in range(20):
        train, valid = training_sets(path, None, DataConfig(valid_fraction=0.1), seed=seed)
        assert len(valid.texts) == round(len(labels) / 10)
        assert set(train.labels) == set(labels)
        assert sorted(train.texts + valid.texts) == sorted(f"document {i}" for i in range(len(labels)))


def test_random_hold_out_leaves_every_tag_of_multi_label_data_in_train(tmp_path):
    path = tmp_path / "data.csv"
    tags = ["food"] * 30 + ["service,food"] * 9 + ["rare,food"]
    pd.DataFrame({"text": [f"document {i}" for i in range(40)], "label": tags}).to_csv(path, index=False)
    for seed in range(30):
        train, valid = training_sets(path, None, DataConfig(multi_label=True, valid_fraction=0.25), seed=seed)
        assert len(valid.texts) == 10 and ["food", "rare"] in train.labels


def test_split_column_without_valid_rows_holds_out_train_rows_only(tmp_path):
    path = tmp_path / "data.csv"
    frame(12, split=["train"] * 10 + ["test"] * 2).to_csv(path, index=False)
    train, valid = training_sets(path, None, DataConfig(valid_fraction=0.2), seed=0)
    assert len(valid.texts) == 2 and len(train.texts) == 8
    assert sorted(train.texts + valid.texts) == sorted(f"document {i}" for i in range(10))


def test_valid_file(tmp_path):
    frame(6).to_csv(tmp_path / "train.csv", index=False)
    frame(3).assign(text=lambda f: "held out " + f.text).to_parquet(tmp_path / "valid.parquet")
    train, valid = training_sets(tmp_path / "train.csv", tmp_path / "valid.parquet",
                                 DataConfig(), seed=0)
    assert train.texts == [f"document {i}" for i in range(6)]
    assert valid.texts == ["held out document 0", "held out document 1", "held out document 2"]
    assert valid.labels == ["pos", "neg", "pos"]


def test_valid_file_that_is_the_training_file_without_split_column_is_refused(tmp_path):
    # Every row would be both trained and validated on: valid accuracy would mean nothing.
    path = tmp_path / "train.csv"
    frame(6).to_csv(path, index=False)
    (tmp_path / "link.csv").hardlink_to(path)
    with pytest.raises(UsageError, match="--valid names the training file"):
        training_sets(path, tmp_path / "link.csv", DataConfig(), seed=0)
    frame(6, split=["train", "valid"] * 3).to_csv(path, index=False)  # its valid rows: fine
    assert len(training_sets(path, path, DataConfig(), seed=0)[1].texts) == 3


def test_random_valid_share_is_seeded(tmp_path):
    path = tmp_path / "data.csv"
    frame(40).to_csv(path, index=False)
    config = DataConfig(valid_fraction=0.25)
    train, valid = training_sets(path, None, config, seed=5)
    assert len(valid.texts) == 10 and len(train.texts) == 30
    assert sorted(train.texts + valid.texts) == sorted(frame(40).text)
    pairs = dict(zip(frame(40).text, frame(40).label))
    assert all(pairs[t] == label for t, label in zip(valid.texts, valid.labels))
    again_train, again_valid = training_sets(path, None, config, seed=5)
    assert (again_train.texts, again_valid.texts) == (train.texts, valid.texts)
    assert training_sets(path, None, config, seed=6)[1].texts != valid.texts


def test_too_few_rows_to_hold_out(tmp_path):
    path = tmp_path / "data.csv"
    frame(2).to_csv(path, index=False)
    with pytest.raises(UsageError, match="too few rows to hold out a validation set; add rows, or give validation rows"):
        training_sets(path, None, DataConfig(), seed=0)


def test_read_labelled_normalizes_labels(tmp_path):
    path = tmp_path / "data.parquet"
    pd.DataFrame({"review": ["a", "b", "c"], "stars": [4.0, 1.0, 10.0]}).to_parquet(path)
    got = read_labelled(path, DataConfig(text_column="review", label_column="stars"))
    assert got.labels == ["4", "1", "10"] and got.texts == ["a", "b", "c"]


@pytest.mark.parametrize(
    "texts, labels, message",
    [
        (["ok", "fine"], ["pos", None], "row 2 \\(iloc 1\\) has no label in column 'label'"),
        (["ok", "  "], ["pos", "neg"], "row 2 \\(iloc 1\\) has empty text in column 'text'"),
    ],
)
def test_read_labelled_rejects_bad_rows(tmp_path, texts, labels, message):
    path = tmp_path / "data.parquet"
    pd.DataFrame({"text": texts, "label": labels}).to_parquet(path)
    with pytest.raises(UsageError, match=message):
        read_labelled(path, DataConfig())


def test_read_labelled_joins_text_columns_and_names_them_when_all_are_empty(tmp_path):
    path = tmp_path / "data.parquet"
    pd.DataFrame({"title": ["Great", None, None], "text": ["Loved it.", "Fine.", " "],
                  "label": ["pos", "pos", "neg"]}).to_parquet(path)
    config = DataConfig(text_column=["title", "text"])
    with pytest.raises(UsageError, match="row 3 \\(iloc 2\\) has empty text in columns 'title', 'text'"):
        read_labelled(path, config)
    pd.read_parquet(path).iloc[:2].to_parquet(path)
    assert read_labelled(path, config).texts == ["Great\n\nLoved it.", "Fine."]


def test_unlabelled_test_rows_are_ignored(tmp_path):
    path = tmp_path / "data.parquet"
    frame(4, split=["train", "train", "valid", "test"]).assign(
        label=["pos", "neg", "pos", None]).to_parquet(path)
    train, valid = training_sets(path, None, DataConfig(), seed=0)
    assert (len(train.texts), len(valid.texts)) == (2, 1)


@pytest.mark.slow
def test_training_draws_a_new_order_of_batches_every_epoch(data_dir, tmp_path, monkeypatch):
    """Lightning must reach the sampler's set_epoch (it once never did: every epoch replayed the
    batches of epoch 0)."""
    from hanclf.config import load_config
    from hanclf.training import train

    drawn: list[tuple[int, list[list[int]]]] = []
    iterate = BucketBatchSampler.__iter__

    def recording(self):
        batches = list(iterate(self))
        if self.shuffle:
            drawn.append((self.epoch, batches))
        return iter(batches)

    monkeypatch.setattr(BucketBatchSampler, "__iter__", recording)
    config = load_config(None, {
        "model.embed_dim": 8, "model.word_hidden": 4, "model.sent_hidden": 4, "model.word_att_dim": 4,
        "model.sent_att_dim": 4, "train.max_epochs": 3, "train.patience": 10, "train.accelerator": "cpu",
    })
    train(data_dir / "train.csv", tmp_path / "m", config, progress=False)
    assert [epoch for epoch, _ in drawn] == [0, 1, 2]
    orders = [batches for _, batches in drawn]
    assert orders[0] != orders[1] != orders[2] and orders[0] != orders[2]
    assert sorted(itertools.chain(*orders[0])) == sorted(itertools.chain(*orders[1]))  # same documents


def test_split_rows_only_become_python_strings(tmp_path, monkeypatch):
    # Each split's read used to turn every row's text into a str, those of the other splits too.
    path = tmp_path / "data.parquet"
    frame(10, split=["test"] * 6 + ["train", "valid", "train", "valid"]).to_parquet(path)
    converted = []
    text_values = hanclf.data.text_values

    def counted(where, column, table):
        converted.append(table.num_rows)
        return text_values(where, column, table)

    monkeypatch.setattr(hanclf.data, "text_values", counted)
    train, valid = training_sets(path, None, DataConfig(), seed=0)
    assert (train.texts, valid.texts) == (["document 6", "document 8"], ["document 7", "document 9"])
    assert converted == [2, 2]


def test_a_split_of_a_file_with_over_2_gib_of_text_is_read(tmp_path, monkeypatch):
    # read_table's table of such a file has its text in several chunks (a string array holds
    # 2 GiB at most). Table.take concatenated each column's chunks first, whole, and failed on
    # the text ("offset overflow while concatenating arrays"). Forty chunks of one 56 MB array:
    # 2.2 GB of text held in 56 MB.
    import pyarrow as pa

    n = 56
    text = pa.array((f"document {i} " + "x" * 1_000_000 for i in range(n)), pa.string())
    splits = ["train", "valid", "train"] + ["test"] * (n - 3)
    chunks = 40
    table = pa.table({
        "text": pa.chunked_array([text] * chunks),
        "label": pa.chunked_array([pa.array(["pos", "neg"] * (n // 2))] * chunks),
        "split": pa.chunked_array([pa.array(splits)] * chunks),
    })
    assert sum(len(c.buffers()[2]) for c in table.column("text").chunks) > 2**31
    path = tmp_path / "data.parquet"
    frame(2, split=["train", "valid"]).to_parquet(path)  # the columns; its rows are table's
    monkeypatch.setattr(hanclf.data, "read_table", lambda path, columns: table.select(columns))
    train = read_labelled(path, DataConfig(), split="train")
    assert [t[:12] for t in train.texts] == ["document 0 x", "document 2 x"] * chunks
    assert train.labels == ["pos", "pos"] * chunks


def test_bad_rows_of_a_split_are_named_by_their_place_in_the_file(tmp_path):
    path = tmp_path / "data.parquet"
    frame(5, split=["test", "valid", "train", "test", "train"]).assign(
        text=["a", "b", "c", "d", " "]).to_parquet(path)
    with pytest.raises(UsageError, match="row 5 \\(iloc 4\\) has empty text"):
        read_labelled(path, DataConfig(), split="train")

def test_encoding_parts_empties_them(tmp_path):
    from hanclf.datamodule import _encoded

    config = DataConfig(min_count=1)
    parts = [tokenize_texts(["Good food. Slow service."], config), tokenize_texts(["Bad.", "Fine food!"], config)]
    vocab = vocabulary(parts, config)
    expected = [doc for part in parts for doc in part.encoded(vocab)]
    docs = _encoded(parts, vocab)
    assert parts == []
    assert [(d.ids.tolist(), d.lengths.tolist()) for d in docs] == [
        (d.ids.tolist(), d.lengths.tolist()) for d in expected]


def test_setup_lets_go_of_the_training_texts_before_the_valid_set(tmp_path, monkeypatch):
    import hanclf.datamodule
    from hanclf.datamodule import HANDataModule

    class Texts(list):  # a list a weak reference can watch
        pass

    path = tmp_path / "data.csv"
    frame(20, split=["train", "train", "valid", "valid"] * 5).to_csv(path, index=False)
    datamodule = HANDataModule(path, None, DataConfig(), batch_size=4, seed=0)
    datamodule.read()
    datamodule._texts = [Texts(texts) for texts in datamodule._texts]
    given = []

    def watched(texts, config):
        given.append(weakref.ref(texts))
        if len(given) == 2:
            assert given[0]() is None, "the training texts are still alive"
        return tokenize_in_parallel(texts, config)

    monkeypatch.setattr(hanclf.datamodule, "tokenize_in_parallel", watched)
    datamodule.setup("fit")
    assert len(given) == 2 and (len(datamodule.train_set), len(datamodule.valid_set)) == (10, 10)


def test_binary_string_columns_are_read_as_their_text(tmp_path):
    # Hive and Impala write every string as Parquet's plain binary: labels came out "b'pos'"
    # (evaluate then found none of the model's labels), split values were refused as unknown.
    rows = {"text": ["Good food.", "Bad food.", "Fine.", "Awful."], "label": ["pos", "neg", "pos", "neg"],
            "split": ["train", "train", "valid", "train"]}
    table = pa.table({name: pa.array([v.encode() for v in values], pa.binary()) for name, values in rows.items()})
    pq.write_table(table, tmp_path / "hive.parquet")
    train, valid = training_sets(tmp_path / "hive.parquet", None, DataConfig(), seed=0)
    assert (train.texts, train.labels) == (["Good food.", "Bad food.", "Awful."], ["pos", "neg", "neg"])
    assert (valid.texts, valid.labels) == (["Fine."], ["pos"])


def test_a_jsonl_split_key_first_seen_past_the_first_objects_still_splits(tmp_path):
    # The split column was looked for in the first 1,000 objects only: past them, its test rows
    # went into training without a word.
    path = tmp_path / "late.jsonl"
    records = [{"text": f"Review {i}.", "label": "pos", "split": None} for i in range(1_000)]
    records += [{"text": "Held out.", "label": "neg", "split": "test"}]
    path.write_text("".join(json.dumps({k: v for k, v in r.items() if v is not None}) + "\n" for r in records))
    with pytest.raises(UsageError, match=r"column 'split' holds null \(1000 rows\)"):
        training_sets(path, None, DataConfig(), seed=0)
    with pytest.raises(UsageError, match="holds null"):  # not "--split test given but the file has no 'split' column"
        read_labelled(path, DataConfig(), split="test")
