"""``--quick``: every benchmark's small size, to find the slope before a long run."""

from __future__ import annotations

import argparse
from typing import Any

#: What a quick run must stay under on 2 cores, set-up included.
QUICK_BUDGET_SECS = 60


def parse_sized(parser: argparse.ArgumentParser, **quick: Any) -> argparse.Namespace:
    """Parse the command line; with ``--quick``, the sizes in ``quick`` replace the
    defaults (a size given on the command line still wins)."""
    shown = ", ".join(f"--{name.replace('_', '-')} {value}" for name, value in quick.items())
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"a small run, under {QUICK_BUDGET_SECS} s on 2 cores, same columns: {shown}",
    )
    args = parser.parse_args()
    if args.quick:
        for name, value in quick.items():
            if getattr(args, name) == parser.get_default(name):
                setattr(args, name, value)
    return args
