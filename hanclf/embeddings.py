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
from hanclf.io import utf16_or_32
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
    """Vectors of the vocabulary's words from a text file of `word v1 ... vN` lines (a first
    `count N` line, as in .vec files, gives N). Fields are split on any whitespace, and a word
    is all that comes before the last N: GloVe's largest file has words with spaces in them
    (which never match, as tokens have none). Words are matched as the vocabulary stores them
    (lower-cased when it is); the first vector of a word wins."""
    if not path.is_file():
        raise UsageError(f"{path}: no such embeddings file (--embeddings)")
    _check_is_text(path)
    found: dict[int, np.ndarray] = {}
    file_dim = header = None
    vectors = 0
    # utf-8-sig: a byte order mark (Windows' Notepad) glued to the header made it no header.
    with path.open(encoding="utf-8-sig", errors="replace") as lines:
        for number, line in enumerate(lines, 1):
            parts = line.split()
            if not parts:
                continue
            if file_dim is None:
                if number == 1 and len(parts) == 2 and all(p.isdigit() for p in parts):
                    file_dim = header = int(parts[1])  # the header of a .vec file
                    continue
                file_dim = _numbers_at_end(parts)
                if file_dim == 0:
                    raise UsageError(f"{path}: line {number} has no numbers; a word-vector file has "
                                     "lines of a word and its vector (word v1 ... vN)")
            vectors += 1
            if vectors == 1 and header is not None and (numbers := _numbers_at_end(parts)) != header:
                raise UsageError(f"{path}: line {number} has {numbers} numbers, and the header (line 1) "
                                 f"says the vectors have {header}; correct the header")
            if file_dim != dim:
                raise UsageError(
                    f"{path}: vectors of {file_dim} numbers, model.embed_dim is {dim}; "
                    f"pass --set model.embed_dim={file_dim} to use these vectors"
                )
            if len(parts) < dim + 1:
                raise UsageError(f"{path}: line {number} has {len(parts) - 1} numbers, the file's "
                                 f"vectors have {dim}")
            word = " ".join(parts[:-dim])
            i = vocab.index.get(word.lower() if vocab.lowercase else word)
            if i is None or i in (PAD, UNK) or i in found:
                continue
            try:
                vector = np.asarray(parts[-dim:], dtype=np.float32)
            except ValueError:
                raise UsageError(f"{path}: line {number} holds something other than numbers") from None
            if not np.isfinite(vector).all():
                raise UsageError(f"{path}: line {number} has a value that is not a finite number")
            found[i] = vector
    if not vectors:
        raise UsageError(f"{path}: holds no word vectors (lines of a word and its numbers)")
    if not found:
        raise UsageError(f"{path}: none of its words are in the training vocabulary; check the file")
    ids = np.fromiter(found, dtype=np.int64)
    return np.stack([found[i] for i in ids]), ids


# The first bytes of compressed files, which must be decompressed to be read as text.
_COMPRESSED = {b"\x1f\x8b": "gzip", b"BZh": "bzip2", b"\xfd7zXZ": "xz", b"PK\x03\x04": "zip"}


def _check_is_text(path: Path) -> None:
    """Refuse a compressed or binary file, which read as text gave a misleading complaint
    about its first lines."""
    with path.open("rb") as file:
        start = file.read(1 << 16)
    for magic, kind in _COMPRESSED.items():
        if start.startswith(magic):
            raise UsageError(f"{path}: is {kind}-compressed; decompress it first (the text file of "
                             "vectors is read as it is)")
    if utf16_or_32(path):  # its NUL bytes would read as binary data below
        raise UsageError(f"{path}: is UTF-16 or UTF-32 text, not UTF-8; save it as UTF-8")
    if b"\x00" in start:
        raise UsageError(f"{path}: holds binary data (word2vec's binary format?); save the vectors as "
                         "text (gensim: save_word2vec_format(path, binary=False))")


def _numbers_at_end(parts: list[str]) -> int:
    """How many fields end a `word v1 ... vN` line as numbers: N, whatever the word's fields
    (a word that is a number, "1984 0.1 0.2", is the one field always left to the word)."""
    count = 0
    for field in reversed(parts[1:]):
        try:
            float(field)
        except ValueError:
            break
        count += 1
    return count


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
