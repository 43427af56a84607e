"""A hostile logs directory: what is opened, what is listed, what may be deleted.

Symlinks out of the directories a source may read, FIFOs, sockets, devices and
directories named like logs, and names swapped between a check and its use.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import logging
import os
import socket
import stat
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from shipper.config import SourceSettings, parse_config
from shipper.errors import ConfigError, RefusedFileError
from shipper.files.confined import open_log_file, split_beneath, unlink_beneath
from shipper.files.fingerprint import Fingerprint
from shipper.housekeeping import disk_guard as guard
from shipper.housekeeping.retention import RotatedFile, survey
from shipper.state.delivered import ShippedIndex
from shipper.tail.checkpoints import Checkpoint
from shipper.tail.globs import (
    REFUSAL_WARNINGS_PER_WINDOW,
    REFUSAL_WINDOW_SECS,
    Refusals,
    discover,
    expand,
    roots_of,
    selected,
)
from shipper.tail.identify import find_copies, identify

LINE = b'{"seq": 1, "msg": "hello"}\n'
SECRET = b'{"seq": 666, "msg": "TOP-SECRET-VALUE"}\n'


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """``logs/`` with one log file, and ``secret/`` beside it (mode 600) with one secret."""
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "app.log").write_bytes(LINE)
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "shadow.txt").write_bytes(SECRET)
    (secret / "shadow.txt").chmod(0o600)
    return tmp_path


def source(logs: Path, pattern: str = "*.log", **more: Any) -> dict[str, SourceSettings]:
    return {"app": SourceSettings(name="app", include=(str(logs / pattern),), **more)}


def read_all(fd: int) -> bytes:
    try:
        return os.pread(fd, 1 << 20, 0)
    finally:
        os.close(fd)


def refused(path: Path, roots: list[str] | None = None) -> RefusedFileError:
    with pytest.raises(RefusedFileError) as caught:
        open_log_file(str(path), roots=roots)
    return caught.value


def in_thread(call: Callable[[], object], timeout: float = 5.0) -> object:
    """Run ``call`` in a thread; fail (rather than hang the suite) if it blocks."""
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(call())
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), "blocked"
    return outcome[0]


# --------------------------------------------------------------------- opening


def test_a_regular_file_opens_and_reads(tree: Path) -> None:
    logs = str(tree / "logs")
    assert read_all(open_log_file(str(tree / "logs" / "app.log"), roots=[logs])) == LINE
    assert read_all(open_log_file(str(tree / "logs" / "app.log"))) == LINE


def test_symlinks_out_of_the_roots_are_refused_with_their_real_target(tree: Path) -> None:
    logs = tree / "logs"
    roots = [str(logs)]
    target = str(tree / "secret" / "shadow.txt")
    (logs / "evil.log").symlink_to("../secret/shadow.txt")
    (logs / "hop").symlink_to(tree / "secret" / "shadow.txt")
    (logs / "chain.log").symlink_to("hop")  # a link to a link
    (logs / "dots.log").symlink_to("../logs/../secret/./shadow.txt")
    (tree / "linked").symlink_to(tree / "secret")  # a link in a linked directory
    (logs / "via-dir.log").symlink_to("../linked/shadow.txt")
    for name in ("evil.log", "chain.log", "dots.log", "via-dir.log"):
        error = refused(logs / name, roots)
        assert error.reason == "symlink_outside" and error.target == target, name
    environ = refused_environ(logs, roots)
    assert environ.reason == "symlink_outside"
    assert environ.target is not None and environ.target.startswith("/proc/")


def refused_environ(logs: Path, roots: list[str]) -> RefusedFileError:
    (logs / "env.log").symlink_to("/proc/self/environ")
    return refused(logs / "env.log", roots)


def test_a_symlink_into_an_allowed_root_is_followed(tree: Path) -> None:
    logs = tree / "logs"
    (logs / "pod.log").symlink_to(tree / "secret" / "shadow.txt")
    roots = [str(logs), str(tree / "secret")]
    assert read_all(open_log_file(str(logs / "pod.log"), roots=roots)) == SECRET
    # Inside the logs directory itself: followed too.
    (logs / "alias.log").symlink_to("app.log")
    assert read_all(open_log_file(str(logs / "alias.log"), roots=[str(logs)])) == LINE


def test_without_roots_the_file_itself_must_not_be_a_symlink(tree: Path) -> None:
    (tree / "logs" / "alias.log").symlink_to("app.log")
    assert refused(tree / "logs" / "alias.log").reason == "symlink"


def test_fifos_sockets_devices_and_directories_are_refused_without_blocking(
    tree: Path,
) -> None:
    logs = tree / "logs"
    roots = [str(logs), "/dev"]
    os.mkfifo(logs / "app.log.2")
    (logs / "dir.log").mkdir()
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(logs / "sock.log"))
    (logs / "null.log").symlink_to("/dev/null")
    try:
        expected = {
            "app.log.2": "fifo",
            "dir.log": "directory",
            "sock.log": "socket",
            "null.log": "char_device",
        }
        for name, kind in expected.items():
            for where in (roots, None):
                if name == "null.log" and where is None:
                    continue  # a symlink: refused as one without roots
                error = in_thread(functools.partial(open_log_file, str(logs / name), roots=where))
                assert isinstance(error, RefusedFileError) and error.reason == kind, (name, where)
        # Nobody holds the FIFO open for reading: a writer would get ENXIO.
        with pytest.raises(OSError) as caught:
            os.open(logs / "app.log.2", os.O_WRONLY | os.O_NONBLOCK)
        assert caught.value.errno == errno.ENXIO
    finally:
        listener.close()


def test_a_fifo_swapped_in_after_the_type_check_does_not_block(
    tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    logs = tree / "logs"
    real_stat = os.stat

    def swap_after_check(path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        result = real_stat(path, *args, **kwargs)
        if path == "app.log" and stat.S_ISREG(result.st_mode):
            (logs / "app.log").unlink()
            os.mkfifo(logs / "app.log")
        return result

    monkeypatch.setattr(os, "stat", swap_after_check)
    error = in_thread(lambda: open_log_file(str(logs / "app.log"), roots=[str(logs)]))
    assert isinstance(error, RefusedFileError) and error.reason == "fifo"


def test_a_directory_swapped_for_a_symlink_after_resolving_is_not_followed(
    tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    logs = tree / "logs"
    (logs / "sub").mkdir()
    (logs / "sub" / "shadow.txt").write_bytes(LINE)
    real_realpath = os.path.realpath

    def swap_after_resolving(path: Any, *args: Any, **kwargs: Any) -> Any:
        resolved = real_realpath(path, *args, **kwargs)
        # The file's path, or its directory's (resolved alone, and cached per scan).
        if str(path).endswith(("sub/shadow.txt", "logs/sub")) and not (tree / "moved").exists():
            (logs / "sub").rename(tree / "moved")
            (logs / "sub").symlink_to(tree / "secret")
        return resolved

    monkeypatch.setattr(os.path, "realpath", swap_after_resolving)
    with pytest.raises(NotADirectoryError):
        open_log_file(str(logs / "sub" / "shadow.txt"), roots=[str(logs)])


def test_identify_and_copies_open_safely(tree: Path) -> None:
    logs = tree / "logs"
    (logs / "evil.log").symlink_to("../secret/shadow.txt")
    os.mkfifo(logs / "fifo.log")
    roots = [str(logs)]
    with pytest.raises(RefusedFileError):
        identify(str(logs / "evil.log"), fingerprint_bytes=16, candidates={}, roots=roots)
    error = in_thread(
        lambda: identify(str(logs / "fifo.log"), fingerprint_bytes=16, candidates={}, roots=roots)
    )
    assert isinstance(error, RefusedFileError)
    found = identify(str(logs / "app.log"), fingerprint_bytes=16, candidates={}, roots=roots)
    assert found is not None
    os.close(found.fd)
    assert in_thread(lambda: find_copies([logs], [], set())) == []


# -------------------------------------------------------------------- discovery


def plant_refusable_paths(tree: Path) -> Path:
    """A symlink out of the logs directory, a FIFO, and a symlink inside (selected)."""
    logs = tree / "logs"
    (logs / "evil.log").symlink_to("../secret/shadow.txt")
    (logs / "alias.log").symlink_to("app.log")
    os.mkfifo(logs / "fifo.log")
    return logs


def test_discover_refuses_and_reports_each_path_once(
    tree: Path, caplog: pytest.LogCaptureFixture
) -> None:
    logs = plant_refusable_paths(tree)
    (logs / "env.log").symlink_to("/proc/self/environ")
    (logs / "dir.log").mkdir()
    sources = source(logs)
    refusals = Refusals()
    caplog.set_level(logging.WARNING, logger="shipper.tail.globs")
    for _ in range(3):
        found = in_thread(lambda: discover(sources, refusals=refusals))
        assert found == [("app", str(logs / "alias.log")), ("app", str(logs / "app.log"))]
    warned = [r for r in caplog.records if r.name == "shipper.tail.globs"]
    assert sorted(Path(r.__dict__["path"]).name for r in warned) == [
        "dir.log",
        "env.log",
        "evil.log",
        "fifo.log",
    ]
    evil = next(r for r in warned if r.__dict__["path"].endswith("evil.log"))
    assert evil.__dict__["target"] == str(tree / "secret" / "shadow.txt")
    assert refusals.counters == {
        "refused_symlink_outside": 2,
        "refused_fifo": 1,
        "refused_directory": 1,
    }
    # Another target: nothing new. Gone, then back: reported again.
    (logs / "evil.log").unlink()
    (logs / "evil.log").symlink_to("/etc/hostname")
    discover(sources, refusals=refusals)
    assert refusals.counters["refused_symlink_outside"] == 2
    (logs / "evil.log").unlink()
    discover(sources, refusals=refusals)
    (logs / "evil.log").symlink_to("/etc/hostname")
    discover(sources, refusals=refusals)
    assert refusals.counters["refused_symlink_outside"] == 3


def test_paths_named_by_events_are_judged_like_a_scan_without_a_word(
    tree: Path, caplog: pytest.LogCaptureFixture
) -> None:
    logs = plant_refusable_paths(tree)
    (logs / "dir.log").mkdir()
    roots = roots_of(source(logs))
    named = [("app", str(logs / n)) for n in ("evil.log", "fifo.log", "dir.log", "gone.log")]
    named += [("app", str(logs / "app.log")), ("app", str(logs / "alias.log"))]
    named += [("other", str(logs / "app.log"))]  # a source the roots do not know
    caplog.set_level(logging.WARNING, logger="shipper.tail.globs")
    assert in_thread(lambda: selected(named, roots)) == [
        ("app", str(logs / "app.log")),
        ("app", str(logs / "alias.log")),
    ]
    # Refusals are the next full scan's to report, once.
    assert caplog.records == []


def test_a_flood_of_refusals_is_counted_whole_and_logged_in_part(
    tree: Path, caplog: pytest.LogCaptureFixture
) -> None:
    logs = tree / "logs"
    now = [0.0]
    refusals = Refusals(clock=lambda: now[0])
    caplog.set_level(logging.WARNING, logger="shipper.tail.globs")
    for n in range(100):
        (logs / f"evil-{n:03}.log").symlink_to("../secret/shadow.txt")
    discover(source(logs), refusals=refusals)
    assert refusals.counters == {"refused_symlink_outside": 100}
    assert len(caplog.records) == REFUSAL_WARNINGS_PER_WINDOW
    now[0] += REFUSAL_WINDOW_SECS
    os.mkfifo(logs / "fifo.log")
    discover(source(logs), refusals=refusals)
    [after] = caplog.records[REFUSAL_WARNINGS_PER_WINDOW:]
    assert after.__dict__["kind"] == "fifo"
    assert after.__dict__["suppressed_since_last"] == 100 - REFUSAL_WARNINGS_PER_WINDOW


def test_symlink_targets_let_a_source_read_through_links(tree: Path) -> None:
    logs = tree / "logs"
    (logs / "pod.log").symlink_to("../secret/shadow.txt")
    allowed = source(logs, symlink_targets=(str(tree / "secret"),))
    assert ("app", str(logs / "pod.log")) in discover(allowed)
    assert ("app", str(logs / "pod.log")) not in discover(source(logs))
    assert roots_of(allowed)["app"].bases == (str(logs),)


def test_double_star_never_descends_through_a_directory_symlink(tree: Path) -> None:
    logs = tree / "logs"
    (logs / "sub").mkdir()
    (logs / "sub" / "b.log").write_bytes(LINE)
    (logs / "up").symlink_to(".")  # a loop: glob would walk it ~40 levels deep
    (logs / "down").symlink_to(".")  # two: 2**40 paths
    (logs / "out").symlink_to("../secret")
    found = in_thread(lambda: expand(str(logs / "**" / "*.log")))
    assert found == [str(logs / "app.log"), str(logs / "sub" / "b.log")]
    assert expand(str(logs / "**" / "*.txt")) == []


def test_a_wildcard_directory_leading_out_is_refused(tree: Path) -> None:
    logs = tree / "logs"
    (tree / "secret" / "app.log").write_bytes(SECRET)
    (logs / "evil").symlink_to("../secret")
    refusals = Refusals()
    assert discover(source(logs, "*/app.log"), refusals=refusals) == []
    assert refusals.counters == {"refused_symlink_outside": 1}


def test_symlink_targets_must_be_absolute() -> None:
    app: dict[str, Any] = {"include": ["/var/log/containers/*.log"]}
    data = {"sources": {"app": app}, "sink": {"type": "directory", "path": "/srv/shipped"}}
    app["symlink_targets"] = ["/var/log/pods/", "pods", 3]
    with pytest.raises(ConfigError) as caught:
        parse_config(data, base_dir=Path("/etc/shipper"), environ={})
    assert [str(p) for p in caught.value.problems] == [
        "sources.app.symlink_targets[2]: expected a string, got integer",
        'sources.app.symlink_targets[1]: must be an absolute path, got "pods"',
    ]
    app["symlink_targets"] = ["/var/log/pods/"]
    settings = parse_config(data, base_dir=Path("/etc/shipper"), environ={})
    assert settings.sources["app"].symlink_targets == ("/var/log/pods",)


# -------------------------------------------------------------------- deleting


@pytest.fixture
def moved_out(tree: Path) -> Iterator[tuple[Path, Path, RotatedFile]]:
    """``logs/sub/app.log.1`` judged, then its directory moved out of ``logs`` and a
    symlink put where it was: the same file (inode) is now reached through a link."""
    logs = tree / "logs"
    (logs / "sub").mkdir()
    rotated = logs / "sub" / "app.log.1"
    rotated.write_bytes(LINE)
    st = rotated.stat()
    judged = RotatedFile(
        path=str(rotated),
        source="app",
        dev=st.st_dev,
        ino=st.st_ino,
        size=st.st_size,
        mtime=st.st_mtime,
        mtime_ns=st.st_mtime_ns,
        disk_bytes=st.st_blocks * 512,
        compressed=False,
        open=False,
        fingerprint=None,
        length=st.st_size,
        shipped=True,
    )
    (logs / "sub").rename(tree / "outside")
    (logs / "sub").symlink_to(tree / "outside")
    yield logs, tree / "outside" / "app.log.1", judged


def test_a_parent_swapped_for_a_symlink_is_refused_by_the_unlink(
    moved_out: tuple[Path, Path, RotatedFile], caplog: pytest.LogCaptureFixture
) -> None:
    logs, outside, judged = moved_out
    assert os.lstat(judged.path).st_ino == judged.ino  # the old check would pass
    bases = {"app": [str(logs)]}
    assert guard._unlink_same_inode(judged, bases) is False
    assert guard._open_unchanged(judged, bases) is None
    assert outside.exists()
    assert "now a symlink" in caplog.text
    with pytest.raises(NotADirectoryError):
        unlink_beneath(str(logs), ["sub", "app.log.1"], judged.inode)


def test_unlink_beneath_deletes_only_the_judged_inode(tree: Path) -> None:
    logs = tree / "logs"
    live = logs / "app.log"
    inode = (live.stat().st_dev, live.stat().st_ino)
    assert unlink_beneath(str(logs), ["app.log"], (inode[0], inode[1] + 1)) is False
    (logs / "link.log").symlink_to("app.log")
    assert unlink_beneath(str(logs), ["link.log"], inode) is False  # a link: never
    assert unlink_beneath(str(logs), ["app.log"], inode) is True
    assert not live.exists() and unlink_beneath(str(logs), ["app.log"], inode) is False


def test_split_beneath_takes_plain_names_below_a_base_only() -> None:
    assert split_beneath("/l/a/b.log", ["/l", "/l/a"]) == ("/l/a", ["b.log"])
    assert split_beneath("/l/../etc/passwd", ["/l"]) is None
    assert split_beneath("/other/x.log", ["/l"]) is None
    assert split_beneath("/l//x.log", ["/l"]) is None


def test_survey_never_offers_a_file_reached_through_a_symlink(tree: Path) -> None:
    logs = tree / "logs"
    (logs / "sub").mkdir()
    rotated = logs / "sub" / "app.log.1"
    rotated.write_bytes(LINE * 10)
    st = rotated.stat()
    head = LINE
    fingerprint = Fingerprint(st.st_dev, st.st_ino, len(head), hashlib.sha256(head).hexdigest())
    # Read through and finished: a candidate wherever it is found.
    known = {
        fingerprint.id: Checkpoint(fingerprint, "app", str(rotated), st.st_size, finished=True)
    }

    def candidates(*paths: Path) -> list[str]:
        found = survey(
            [("app", str(p)) for p in paths],
            known=known,
            index=ShippedIndex(),
            live=set(),
            open_files={},
            streams={},
            bases={"app": [str(logs)]},
        )
        return [f.path for f in found]

    assert candidates(rotated) == [str(rotated)]
    (logs / "sub").rename(tree / "outside")
    (logs / "sub").symlink_to(tree / "outside")  # a directory link
    (logs / "app.log.2").symlink_to(tree / "outside" / "app.log.1")  # a file link
    assert candidates(rotated, logs / "app.log.2", tree / "outside" / "app.log.1") == []


def test_looping_and_dangling_links_are_left_out_quietly(tree: Path) -> None:
    logs = tree / "logs"
    (logs / "self.log").symlink_to("self.log")
    (logs / "ping.log").symlink_to("pong.log")
    (logs / "pong.log").symlink_to("ping.log")
    (logs / "dangling.log").symlink_to("gone.log")
    for n in range(50):  # longer than the kernel follows
        (logs / f"hop{n}").symlink_to(f"hop{n + 1}")
    (logs / "hop50").write_bytes(LINE)
    (logs / "long.log").symlink_to("hop0")
    refusals = Refusals()
    assert discover(source(logs), refusals=refusals) == [("app", str(logs / "app.log"))]
    assert refusals.counters == {}
