"""Initial word embeddings: a word-vector text file, word2vec on the training text, freezing."""

from __future__ import annotations

import gzip
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from hanclf.artifact import load
from hanclf.cli.main import app
from hanclf.data import index_tokens
from hanclf.config import DataConfig
from hanclf.embeddings import read_vectors, train_word2vec
from hanclf.errors import UsageError
from hanclf.vocab import Vocab

VOCAB = Vocab(["the", "food", "was", "great"], lowercase=True)  # ids 2..5


def vec_file(tmp_path: Path, lines: list[str], name: str = "v.vec") -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_read_vectors_matches_words_as_the_vocabulary_stores_them(tmp_path):
    path = vec_file(tmp_path, ["4 3", "Food 1 2 3", "great 4 5 6", "unseen 7 7 7", "food 9 9 9",
                               "<unk> 8 8 8"])
    vectors, ids = read_vectors(path, VOCAB, dim=3)
    assert ids.tolist() == [3, 5]  # "Food" lower-cased; the second "food" ignored; <unk> never set
    assert vectors.tolist() == [[1, 2, 3], [4, 5, 6]] and vectors.dtype == np.float32


def test_read_vectors_without_header_and_its_errors(tmp_path):
    vectors, ids = read_vectors(vec_file(tmp_path, ["was 0.5 -1"]), VOCAB, dim=2)
    assert ids.tolist() == [4] and vectors.tolist() == [[0.5, -1.0]]
    with pytest.raises(UsageError, match="vectors of 2 numbers, model.embed_dim is 3; pass --set model.embed_dim=2"):
        read_vectors(vec_file(tmp_path, ["was 0.5 -1"]), VOCAB, dim=3)
    with pytest.raises(UsageError, match="none of its words"):
        read_vectors(vec_file(tmp_path, ["zebra 1 2"]), VOCAB, dim=2)
    with pytest.raises(UsageError, match="line 2 holds something other than numbers"):
        read_vectors(vec_file(tmp_path, ["was 1 2", "food x y"]), VOCAB, dim=2)
    with pytest.raises(UsageError, match="no such embeddings file"):
        read_vectors(tmp_path / "nope.vec", VOCAB, dim=2)


def test_read_vectors_takes_odd_lines_as_real_files_have_them(tmp_path):
    # GloVe 840B has tokens with spaces inside ("at name@domain.com"); tabs and double spaces
    # separate fields in hand-made files. Each used to refuse the whole file, suggesting a
    # wrong --set model.embed_dim.
    lines = ["new york 1 1", "was\t0.5\t-1", "food  2 3", "", "the 4 5"]
    vectors, ids = read_vectors(vec_file(tmp_path, lines), VOCAB, dim=2)
    assert dict(zip(ids.tolist(), vectors.tolist())) == {4: [0.5, -1.0], 3: [2, 3], 2: [4, 5]}
    with pytest.raises(UsageError, match="line 2 has 1 numbers, the file's vectors have 2"):
        read_vectors(vec_file(tmp_path, ["was 1 2", "food 3"]), VOCAB, dim=2)
    with pytest.raises(UsageError, match="line 1 has no numbers; a word-vector file"):  # a word list
        read_vectors(vec_file(tmp_path, ["was", "food"]), VOCAB, dim=2)
    with pytest.raises(UsageError, match="vectors of 3 numbers, model.embed_dim is 2; pass --set model.embed_dim=3"):
        read_vectors(vec_file(tmp_path, ["2 3", "new york 1 2 3"]), VOCAB, dim=2)


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e999"])
def test_read_vectors_refuses_values_that_are_not_finite(tmp_path, value):
    # A NaN vector crashed training with a traceback (the other words' random scale became NaN).
    with pytest.raises(UsageError, match="line 2 has a value that is not a finite number"):
        read_vectors(vec_file(tmp_path, ["was 1 2", f"food 3 {value}"]), VOCAB, dim=2)


def test_word2vec_is_deterministic_and_words_of_the_same_contexts_end_up_close():
    pytest.importorskip("gensim", reason="gensim not installed (pip install 'hanclf[word2vec]')")
    words = ["hot", "warm", "soup", "tea", "slow", "rude", "waiter", "host"]
    vocab = Vocab(words, lowercase=True)
    rng = np.random.default_rng(0)
    # hot/warm describe soup/tea, slow/rude describe waiter/host: same contexts, close vectors
    def sentence() -> list[str]:
        if rng.random() < 0.5:
            return [str(rng.choice(["hot", "warm"])), str(rng.choice(["soup", "tea"]))]
        return [str(rng.choice(["slow", "rude"])), str(rng.choice(["waiter", "host"]))]

    docs = index_tokens([[sentence() for _ in range(5)] for _ in range(600)], DataConfig(min_count=1)).encoded(vocab)
    a, ids = train_word2vec(docs, vocab, dim=16, seed=3)
    b, _ = train_word2vec(docs, vocab, dim=16, seed=3)
    np.testing.assert_array_equal(a, b)
    assert sorted(ids.tolist()) == list(range(2, 10))
    unit = {vocab.words[i]: v / np.linalg.norm(v) for i, v in zip(ids, a)}
    assert unit["hot"] @ unit["warm"] > unit["hot"] @ unit["rude"]
    assert unit["waiter"] @ unit["host"] > unit["waiter"] @ unit["tea"]


@pytest.mark.slow
def test_train_with_frozen_file_embeddings_keeps_them(data_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the file is named relative to here
    words = ["the", "food", "was", "wonderful", "awful", "great"]
    rng = np.random.default_rng(1)
    table = {w: rng.normal(size=8).round(4) for w in words}
    path = vec_file(tmp_path, [f"{len(words)} 8"] + [f"{w} " + " ".join(map(str, v)) for w, v in table.items()])
    out = tmp_path / "model"
    result = CliRunner().invoke(app, [
        "train", str(data_dir / "train.csv"), "-o", str(out), "--embeddings", path.name,
        "--set", "train.freeze_embeddings=true", "--set", "model.embed_dim=8",
        "--set", "model.word_hidden=4", "--set", "model.sent_hidden=4", "--set", "data.min_count=1",
        "--max-epochs", "2", "--accelerator", "cpu",
    ])
    assert result.exit_code == 0, result.output
    assert "file embeddings for 6 of" in result.output
    artifact = load(out)
    weight = artifact.model.embedding.weight.detach()
    for word, vector in table.items():
        torch.testing.assert_close(weight[artifact.vocab.index[word]], torch.tensor(vector, dtype=torch.float32))
    assert weight[0].abs().sum() == 0  # PAD
    # The saved config repeats the run from any directory: it names the file absolutely.
    assert artifact.config.train.embeddings_file == str(path.resolve())
    assert artifact.config.train.embeddings == "file"


def test_word2vec_without_gensim_fails_before_reading_the_data(tmp_path, monkeypatch):
    import hanclf.embeddings

    real_find_spec = hanclf.embeddings.importlib.util.find_spec
    monkeypatch.setattr(hanclf.embeddings.importlib.util, "find_spec",
                        lambda name, *a: None if name == "gensim" else real_find_spec(name, *a))
    data = tmp_path / "reviews.csv"
    data.write_text("text,stars\n" + "good food.,5\nbad food.,1\n" * 5)  # no label column: unread
    result = CliRunner().invoke(app, ["train", str(data), "-o", str(tmp_path / "m"),
                                      "--embeddings", "word2vec"])
    assert result.exit_code == 2
    assert "pip install 'hanclf[word2vec]'" in result.output and "train.embeddings=random" in result.output
    assert not (tmp_path / "m").exists() and "Traceback" not in result.output


def test_read_vectors_says_what_is_wrong_with_files_people_have(tmp_path):
    # Each was misread: a byte order mark hid the header ("vectors of 1 numbers ... pass --set
    # model.embed_dim=1"); a header that disagrees with the vectors, an empty file and a header
    # alone gave "none of its words are in the vocabulary"; gzip and word2vec's binary format
    # complained about their first lines' numbers.
    bom = tmp_path / "bom.vec"
    bom.write_text("2 3\nfood 1 2 3\ngreat 4 5 6\n", encoding="utf-8-sig")
    vectors, ids = read_vectors(bom, VOCAB, dim=3)
    assert ids.tolist() == [3, 5] and vectors.tolist() == [[1, 2, 3], [4, 5, 6]]
    with pytest.raises(UsageError, match=r"line 2 has 4 numbers, and the header \(line 1\) says the vectors have 3"):
        read_vectors(vec_file(tmp_path, ["2 3", "food 1 2 3 4"]), VOCAB, dim=3)
    for lines in ([""], ["2 3"]):
        with pytest.raises(UsageError, match="holds no word vectors"):
            read_vectors(vec_file(tmp_path, lines), VOCAB, dim=3)
    packed = tmp_path / "v.vec.gz"
    packed.write_bytes(gzip.compress(b"food 1 2 3\n"))
    with pytest.raises(UsageError, match="is gzip-compressed; decompress it first"):
        read_vectors(packed, VOCAB, dim=3)
    binary = tmp_path / "v.bin"
    binary.write_bytes(b"1 3\nfood " + np.array([1, 0, 2], np.float32).tobytes() + b"\n")
    with pytest.raises(UsageError, match="binary data .word2vec's binary format"):
        read_vectors(binary, VOCAB, dim=3)
    utf16 = tmp_path / "u16.vec"  # PowerShell 5's `>` writes UTF-16
    utf16.write_text("1 3\nfood 1 2 3\n", encoding="utf-16")
    with pytest.raises(UsageError, match="is UTF-16 or UTF-32 text, not UTF-8; save it as UTF-8"):
        read_vectors(utf16, VOCAB, dim=3)


def test_huge_vectors_set_the_unknown_words_scale_without_numpy_warnings():
    # Their float32 standard deviation overflowed: numpy's raw RuntimeWarning on the terminal.
    from hanclf.training import _set_embeddings

    weight = torch.empty(6, 2)
    vectors = np.array([[1e30, -1e30], [3e30, -3e30]], np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _set_embeddings(weight, vectors, np.array([2, 3]))
    assert weight[0].tolist() == [0, 0] and torch.equal(weight[3], torch.from_numpy(vectors[1]))
    assert torch.isfinite(weight).all() and 1e29 < weight[4:].abs().max() < 1e32
