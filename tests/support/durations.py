"""Write ``tests/durations.json`` from a JUnit XML report of a whole run.

    ./dev test --junitxml=/tmp/run.xml
    .venv/bin/python -m tests.support.durations /tmp/run.xml

The conftest starts the longest tests first; tests under a second are left out.
"""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
#: Shorter tests keep their collection order.
AT_LEAST_SECS = 1.0


def node_id(classname: str, name: str) -> str:
    """``tests.test_x.TestY`` + ``name`` -> ``tests/test_x.py::TestY::name``."""
    parts = classname.split(".")
    for split in range(len(parts), 0, -1):
        module = Path(*parts[:split]).with_suffix(".py")
        if (TESTS.parent / module).is_file():
            return "::".join([module.as_posix(), *parts[split:], name])
    raise ValueError(f"no test module for {classname}")


def durations(report: Path) -> dict[str, float]:
    measured: dict[str, float] = {}
    for case in ET.parse(report).iter("testcase"):
        secs = float(case.get("time", "0"))
        if secs >= AT_LEAST_SECS:
            measured[node_id(case.get("classname", ""), case.get("name", ""))] = round(secs, 1)
    return dict(sorted(measured.items(), key=lambda item: -item[1]))


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    out = TESTS / "durations.json"
    out.write_text(json.dumps(durations(Path(argv[0])), indent=1) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
