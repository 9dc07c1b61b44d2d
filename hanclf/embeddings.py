"""Initial word embeddings: random (the default), read from a word-vector text file (fastText
`.vec`, GloVe or word2vec text format), or word2vec trained on the training text itself, as
Yang et al. (2016) did. Only the start of training changes: the vectors end up in the model's
weights, so prediction never needs the file or gensim.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from hanclf.data import EncodedDoc
from hanclf.errors import UsageError
from hanclf.model import PAD, UNK
from hanclf.vocab import Vocab

WORD2VEC_EPOCHS = 5
WORD2VEC_WINDOW = 5


def initial_embeddings(
    source: str,
    path: str | None,
    vocab: Vocab,
    train_docs: Sequence[EncodedDoc],
    dim: int,
    seed: int,
    log: Callable[[str], None],
) -> tuple[np.ndarray, np.ndarray] | None:
    """(vectors (found, dim) float32, their word ids) for the vocabulary words `source` covers;
    None for random embeddings. The other rows keep the model's random initialisation."""
    if source == "random":
        return None
    if source == "file":
        if not path:
            raise UsageError("train.embeddings=file needs train.embeddings_file (or --embeddings PATH)")
        vectors, ids = read_vectors(Path(path), vocab, dim)
    else:
        vectors, ids = train_word2vec(train_docs, vocab, dim, seed)
    log(f"{source} embeddings for {len(ids)} of {len(vocab) - 2} vocabulary words")
    return vectors, ids


def read_vectors(path: Path, vocab: Vocab, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Vectors of the vocabulary's words from a text file of `word v1 ... vdim` lines (a first
    `count dim` line, as in .vec files, is skipped). Words are matched as the vocabulary
    stores them (lower-cased when it is); the first vector of a word wins."""
    if not path.is_file():
        raise UsageError(f"{path}: no such embeddings file (--embeddings)")
    found: dict[int, np.ndarray] = {}
    with path.open(encoding="utf-8", errors="replace") as lines:
        for number, line in enumerate(lines, 1):
            parts = line.rstrip().split(" ")
            if number == 1 and len(parts) == 2:
                continue  # the header of a .vec file
            if len(parts) != dim + 1:
                raise UsageError(
                    f"{path}: line {number} has {len(parts) - 1} numbers, model.embed_dim is {dim}; "
                    f"pass --set model.embed_dim={len(parts) - 1} to use these vectors"
                )
            word = parts[0].lower() if vocab.lowercase else parts[0]
            i = vocab.index.get(word)
            if i is not None and i not in (PAD, UNK) and i not in found:
                try:
                    found[i] = np.asarray(parts[1:], dtype=np.float32)
                except ValueError:
                    raise UsageError(f"{path}: line {number} holds something other than numbers") from None
    if not found:
        raise UsageError(f"{path}: none of its words are in the training vocabulary; check the file")
    ids = np.fromiter(found, dtype=np.int64)
    return np.stack([found[i] for i in ids]), ids


def require_gensim() -> None:
    """Fail before any data is read when word2vec embeddings cannot be trained here."""
    if importlib.util.find_spec("gensim") is None:
        raise UsageError(
            "train.embeddings=word2vec needs gensim: pip install 'hanclf[word2vec]', or pass "
            "--set train.embeddings=random"
        )


def train_word2vec(
    docs: Sequence[EncodedDoc], vocab: Vocab, dim: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Skip-gram word2vec (gensim) on the training sentences as the model sees them; one worker
    thread, so the same seed gives the same vectors."""
    require_gensim()
    from gensim.models import Word2Vec

    sentences = []
    for doc in docs:
        for sentence in np.split(doc.ids, np.cumsum(doc.lengths)[:-1]):
            words = [vocab.words[i] for i in sentence if i > UNK]
            if words:
                sentences.append(words)
    model = Word2Vec(
        sentences, vector_size=dim, window=WORD2VEC_WINDOW, min_count=1, sg=1,
        epochs=WORD2VEC_EPOCHS, seed=seed, workers=1,
    )
    ids = np.array([vocab.index[w] for w in model.wv.index_to_key], dtype=np.int64)
    return model.wv.vectors.astype(np.float32), ids
