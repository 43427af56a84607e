"""What looking at every file costs when nothing changes: the periodic scan takes a
bounded share of a core (rarer while change events name every write), and finding
the logs' directories does not list their files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from shipper.config import SourceSettings
from shipper.tail.globs import directories, events_see_every_write
from shipper.tail.watch import scan_rests


def _sources(*include: str, **more: object) -> dict[str, SourceSettings]:
    return {"app": SourceSettings(name="app", include=include, **more)}  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("include", "expected"),
    [
        (("/var/log/app/*.log",), True),
        (("/var/log/app/app.log", "/var/log/app/*.json"), True),
        (("app.log",), True),
        (("./logs/*.log",), True),
        (("/var/log/*/app.log",), False),
        (("/var/log/app/**/*.log",), False),
        (("/var/log/app/*.log", "/srv/*/x.log"), False),
    ],
)
def test_events_see_every_write_only_without_wildcards_above_the_name(
    include: tuple[str, ...], expected: bool
) -> None:
    assert events_see_every_write(_sources(*include)) is expected


def test_symlinks_followed_elsewhere_are_writes_events_do_not_name() -> None:
    sources = _sources("/var/log/containers/*.log", symlink_targets=("/var/log/pods",))
    assert not events_see_every_write(sources)


def test_polling_rests_nineteen_times_the_scan_capped_at_thirty_seconds() -> None:
    assert scan_rests(0.5, poll_interval=1.0, events_see_all=False) == (9.5, 9.5)
    assert scan_rests(0.001, poll_interval=1.0, events_see_all=False) == (0.019, 1.0)
    assert scan_rests(10.0, poll_interval=1.0, events_see_all=False) == (30.0, 30.0)


def test_with_every_write_evented_the_periodic_scan_takes_one_percent() -> None:
    rest, sweep = scan_rests(1.5, poll_interval=1.0, events_see_all=True)
    assert rest == pytest.approx(28.5)  # a create or rename is still looked at soon
    assert sweep == pytest.approx(148.5)
    assert scan_rests(10.0, poll_interval=1.0, events_see_all=True)[1] == 300.0
    # Small trees keep the poll interval: a lost event costs a second, as before.
    assert scan_rests(0.001, poll_interval=1.0, events_see_all=True)[1] == 1.0


def test_directories_expands_only_the_directory_part(tmp_path: Path) -> None:
    for name in ("a/x.log", "b/y.log", "deep/er/z.log", "top.log"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("{}\n")
    (tmp_path / "empty").mkdir()
    base = str(tmp_path)

    def dirs(pattern: str) -> set[str]:
        return {os.path.relpath(d, base) for d in directories(_sources(f"{base}/{pattern}"))}

    assert dirs("*.log") == {"."}
    assert dirs("a/*.log") == {"a"}
    assert dirs("missing/*.log") == set()
    assert dirs("*/*.log") == {"a", "b", "deep", "empty"}
    assert dirs("**/*.log") == {".", "a", "b", "deep/er"}
