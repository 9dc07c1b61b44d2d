"""Does tokenize split text alike under other Pythons? Its rules read Python's Unicode tables
(what `\\w` matches, NFC), which each Python version updates; vocab.json's `tokenizer` version
tracks changes of the rules only.

Tokenizes the given review files' text columns under each interpreter given (tokenize.py is
stdlib only, so a bare Python will do), and every code point once in a probe sentence, then
prints a digest of the outputs per interpreter and how many code points split otherwise than
under the first one.

    python bench/tokenize_pythons.py --data ../shared/data/*_reviews.parquet \\
        --python ~/.pyenv/versions/3.10.13/bin/python --python ~/.pyenv/versions/3.13.0/bin/python
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]

# Run by each interpreter: reads texts (JSON lines) and writes one JSON line of results.
CHILD = r"""
import hashlib, json, sys, unicodedata
sys.path.insert(0, sys.argv[1])
from hanclf.tokenize import tokenize
texts = hashlib.sha256()
with open(sys.argv[2], encoding="utf-8") as lines:
    for line in lines:
        texts.update(json.dumps(tokenize(json.loads(line)), ensure_ascii=True).encode())
probes = [hashlib.sha256(json.dumps(tokenize(f"Good {c}food{c} here. Bad{c} x {c}. Then"),
                                    ensure_ascii=True).encode()).hexdigest()[:12]
          for c in map(chr, range(0x110000))]
print(json.dumps({"python": sys.version.split()[0], "unicode": unicodedata.unidata_version,
                  "texts": texts.hexdigest()[:16], "probes": probes}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, nargs="+", required=True)
    parser.add_argument("--python", action="append", default=[], help="an interpreter to compare")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        texts_file = Path(tmp) / "texts.jsonl"
        count = 0
        with texts_file.open("w", encoding="utf-8") as out:
            for path in args.data:
                frame = pd.read_parquet(path)
                for column in [c for c in ("title", "text") if c in frame]:
                    for text in frame[column].dropna():
                        out.write(json.dumps(text) + "\n")
                        count += 1
        results = [json.loads(subprocess.run(
            [python, "-c", CHILD, str(REPO), str(texts_file)],
            check=True, capture_output=True, text=True).stdout)
            for python in [sys.executable, *args.python]]
    first = results[0]
    print(f"{count:,} texts of {', '.join(p.name for p in args.data)}")
    print("| Python | Unicode | digest of the texts' tokens | code points split otherwise than "
          f"under {first['python']} |")
    print("|---|---|---|---:|")
    for result in results:
        differ = sum(a != b for a, b in zip(result["probes"], first["probes"]))
        print(f"| {result['python']} | {result['unicode']} | {result['texts']} | {differ:,} |")


if __name__ == "__main__":
    main()
