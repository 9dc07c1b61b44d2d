"""pyproject's floors are what README's "Oldest versions" check runs: .ci/lowest-constraints.txt
pins each at the release the suite passed with, so raising one without the other would test, or
declare, versions nobody ran."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _release(version: str) -> tuple[int, ...]:
    parts = tuple(int(p) for p in version.split("."))
    return parts + (0,) * (3 - len(parts))  # 2.0 is 2.0.0


def test_the_lowest_constraints_pin_each_floor_of_pyproject():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    floors = {}
    for requirement in project["dependencies"] + project["optional-dependencies"]["test"]:
        name, floor = re.fullmatch(r"([\w.-]+)(?:\[[\w,]+\])?>=([\d.]+)(?:,<[\d.]+)?", requirement).groups()
        floors[name.lower()] = _release(floor)
    del floors["torch"]  # named on the install command line, not in the constraints
    pins = {}
    for line in (ROOT / ".ci" / "lowest-constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pins[name.strip().lower()] = _release(version.strip())
    assert pins == floors
