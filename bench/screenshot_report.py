"""Render an HTML report of `hanclf explain --html` with headless Chromium; save a PNG.

    hanclf explain runs/yelp ../shared/data/yelp_reviews.parquet --split test --limit 20 \\
        --html /tmp/yelp_report.html
    python bench/screenshot_report.py /tmp/yelp_report.html docs/report.png

Needs Chromium (Debian: `apt-get install chromium`); runs it offline in a fresh profile.
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("html", type=Path, help="the report, from hanclf explain --html")
    parser.add_argument("png", type=Path, help="the screenshot to write")
    parser.add_argument("--width", type=int, default=1200)
    parser.add_argument("--height", type=int, default=1600)
    args = parser.parse_args()
    screenshot(args.html, args.png, args.width, args.height)
    print(f"wrote {args.png} from {args.html}")


if __name__ == "__main__":
    main()
