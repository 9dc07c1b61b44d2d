"""Render an HTML report with headless Chromium and save a PNG screenshot.

    python bench/screenshot_report.py report.html docs/report.png
    python bench/screenshot_report.py --model runs/yelp --data /work/shared/data/yelp_reviews.parquet \\
        --split test --limit 20 --html /tmp/yelp_report.html docs/report.png

With --model/--data the report is built first (first `--limit` rows, of `--split` when the data
has a `split` column), with `hanclf.report.HtmlReport`, then rendered. Needs Chromium
(Debian: `apt-get install chromium`); runs it offline in a fresh profile.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--hide-scrollbars",
]


def chromium_path() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    sys.exit("no chromium found: apt-get install -y chromium")


def chromium(page: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run headless Chromium on the local file `page` with `args` in a throwaway profile."""
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        return subprocess.run(
            [chromium_path(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args,
             page.resolve().as_uri()],
            capture_output=True, text=True, timeout=timeout, check=False,
        )


def screenshot(page: Path, png: Path, width: int = 1200, height: int = 1600) -> None:
    png.parent.mkdir(parents=True, exist_ok=True)
    result = chromium(page, f"--screenshot={png.resolve()}", f"--window-size={width},{height}")
    if result.returncode != 0 or not png.exists():
        sys.exit(f"chromium failed ({result.returncode}):\n{result.stderr[-2000:]}")


def build_report(model: Path, data: Path, html: Path, split: str | None, limit: int,
                 text_column: str | None, id_column: str | None, label_column: str | None) -> None:
    import pandas as pd

    from hanclf.predict import Predictor
    from hanclf.report import HtmlReport
    from hanclf.vocab import normalize_label

    predictor = Predictor(model, device="cpu")
    frame = pd.read_parquet(data) if data.suffix in (".parquet", ".pq") else pd.read_csv(data)
    if split and "split" in frame.columns:
        frame = frame[frame["split"] == split]
    frame = frame.head(limit)
    config = predictor.artifact.config.data
    text_column = text_column or config.text_column
    label_column = label_column or config.label_column
    id_column = id_column or ("id" if "id" in frame.columns else None)
    ids = frame[id_column].tolist() if id_column else list(range(len(frame)))
    truth = frame[label_column].tolist() if label_column in frame.columns else [None] * len(frame)
    report = HtmlReport(predictor.labels.names, f"{model.name}: {data.name}, first {len(frame)} rows" + (f" of split {split}" if split else ""))
    for doc_id, true, att in zip(ids, truth, predictor.attend(frame[text_column].tolist())):
        report.add(str(doc_id), att, normalize_label(true))
    html.parent.mkdir(parents=True, exist_ok=True)
    report.write(html)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("html_or_png", type=Path, nargs="+",
                        help="REPORT.html OUT.png, or OUT.png with --model/--data")
    parser.add_argument("--model", type=Path)
    parser.add_argument("--data", type=Path)
    parser.add_argument("--html", type=Path, default=Path("/tmp/hanclf_report.html"))
    parser.add_argument("--split", default=None)
    parser.add_argument("--limit", type=int, default=20)
    parser.add_argument("--text-column")
    parser.add_argument("--id-column")
    parser.add_argument("--label-column")
    parser.add_argument("--width", type=int, default=1200)
    parser.add_argument("--height", type=int, default=1600)
    args = parser.parse_args()
    if args.model or args.data:
        if not (args.model and args.data) or len(args.html_or_png) != 1:
            parser.error("--model and --data go together, with one positional OUT.png")
        build_report(args.model, args.data, args.html, args.split, args.limit,
                     args.text_column, args.id_column, args.label_column)
        page, png = args.html, args.html_or_png[0]
    elif len(args.html_or_png) == 2:
        page, png = args.html_or_png
    else:
        parser.error("give REPORT.html OUT.png, or --model and --data with OUT.png")
    screenshot(page, png, args.width, args.height)
    print(f"wrote {png} from {page}")


if __name__ == "__main__":
    main()
