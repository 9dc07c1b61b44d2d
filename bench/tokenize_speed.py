"""Tokenizer throughput on real reviews: documents per second on one core.

Times, on the first --rows texts of a Parquet file (column `text`):
  tokenize        hanclf.tokenize.tokenize(text) for every text, each result dropped at once:
                  the tokenizer's own work;
  tokenize, kept  the same, keeping every result in one list: adds the garbage collector
                  walking that growing list;
  ids             hanclf.data.index_tokens(docs).encoded(vocab): truncation, ids, one array
                  per document, with a Vocab built from the same docs (min_count=2,
                  max_vocab=50000, lowercase=True; the imdb preset's caps);
  tokenize + ids  hanclf.data.tokenize_texts(texts).encoded(vocab): the work of preparing data
                  for the model (what predict does);
  re floor        re.findall(r"\w+|[^\w\s]", text): one match of the simplest pattern per
                  word or punctuation mark, no cleaning, no sentences; the least that any
                  tokenizer built on Python's `re` pays for as many tokens.

    python bench/tokenize_speed.py --data ../shared/data/imdb_reviews.parquet --rows 5000

One process, one thread. Each figure is the median of --repeat passes (the best pass is shown
too), timed in CPU seconds of this process (time.process_time) so that other programs on the
machine inflate it less than wall-clock time; run on an otherwise idle machine all the same.
"""

from __future__ import annotations

import argparse
import gc
import platform
import re
import statistics
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq

from hanclf.config import DataConfig
from hanclf.data import index_tokens, tokenize_texts, vocabulary
from hanclf.tokenize import tokenize


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def timed(work: Callable[[], object], repeat: int) -> tuple[float, float]:
    """Median and best CPU seconds of `work()` over `repeat` passes."""
    seconds = []
    for _ in range(repeat):
        gc.collect()  # every pass starts with the garbage of the previous one gone
        start = time.process_time()
        work()
        seconds.append(time.process_time() - start)
    return statistics.median(seconds), min(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="Parquet file, column `text`")
    parser.add_argument("--rows", type=int, default=5000, help="first N texts (default 5000)")
    parser.add_argument("--repeat", type=int, default=5, help="passes per figure (default 5)")
    args = parser.parse_args()

    texts = pq.read_table(args.data, columns=["text"]).column("text").to_pylist()[: args.rows]
    docs = [tokenize(t) for t in texts]  # also warms up before the timed passes
    config = DataConfig(max_sentences=40, max_words=50, min_count=2, max_vocab=50000, lowercase=True)
    vocab = vocabulary([index_tokens(docs, config)], config)
    n = len(texts)
    # The texts, docs and vocab live through every pass: keep the garbage collector from
    # walking them again and again, so the passes time the per-document work.
    gc.collect()
    gc.freeze()
    sentences = sum(map(len, docs))
    words = sum(len(s) for d in docs for s in d)

    print(f"CPU: {cpu_model()}")
    print(f"Python: {platform.python_implementation()} {platform.python_version()}")
    print(f"data: {args.data} ({n} docs; per doc {sum(len(t or '') for t in texts) / n:.0f} "
          f"characters, {sentences / n:.1f} sentences, {words / n:.0f} tokens; vocab {len(vocab)})")
    cases = {
        "tokenize": lambda: deque(map(tokenize, texts), maxlen=0),  # keeps nothing
        "tokenize, kept": lambda: [tokenize(t) for t in texts],
        "ids": lambda: index_tokens(docs, config).encoded(vocab),
        "tokenize + ids": lambda: tokenize_texts(texts, config).encoded(vocab),
        "re floor": lambda: deque(map(re.compile(r"\w+|[^\w\s]").findall, texts), maxlen=0),
    }
    print(f"{'':16}{'docs/s per core':>16}{'best pass':>12}{'us/doc':>9}")
    for name, work in cases.items():
        median, best = timed(work, args.repeat)
        print(f"{name:16}{n / median:16,.0f}{n / best:12,.0f}{median / n * 1e6:9.1f}")


if __name__ == "__main__":
    main()
