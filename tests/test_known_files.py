"""The known files' indexes follow every add, replace and delete; the waiting line keeps order."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shipper.files.fingerprint import Fingerprint
from shipper.files.markers import Marker
from shipper.state.delivered import ShippedFile, ShippedIndex
from shipper.tail.checkpoints import Checkpoint
from shipper.tail.known import KnownFiles, WaitingFiles


def checkpoint(ino: int, head: str, *, marked: bool = True, offset: int = 10) -> Checkpoint:
    fingerprint = Fingerprint(dev=1, ino=ino, head_len=10, head_sha256=head * 64)
    markers = (Marker(end=offset, digest="0" * 16),) if marked else ()
    return Checkpoint(fingerprint, "app", f"/logs/{ino}.log", offset, markers=markers)


def test_indexes_follow_adds_and_deletes() -> None:
    a, b, c = checkpoint(1, "a"), checkpoint(1, "b"), checkpoint(2, "a", marked=False)
    known = KnownFiles({a.fingerprint.id: a, b.fingerprint.id: b})
    known[c.fingerprint.id] = c

    by_inode, by_head = known.index()
    assert by_inode[(1, 1)] == (a, b)
    assert by_inode[(1, 2)] == (c,)
    # Only checkpoints with markers can be matched by their first bytes.
    assert list(by_head["a" * 64]) == [a]
    assert "a" * 64 in by_head and "b" * 64 in by_head
    assert len(by_head) == 2

    del known[a.fingerprint.id]
    assert known.on_inode((1, 1)) == (b,)
    assert a.fingerprint.id not in known
    by_inode, by_head = known.index()
    assert "a" * 64 not in by_head  # c is still there, but without markers
    assert set(by_inode) == {(1, 1), (1, 2)}

    del known[b.fingerprint.id], known[c.fingerprint.id]
    assert known.index()[0] == {} and len(known) == 0


def test_a_replaced_checkpoint_is_indexed_once() -> None:
    old = checkpoint(3, "c", marked=False)
    known = KnownFiles({old.fingerprint.id: old})
    newer = checkpoint(3, "c", offset=99)
    known[newer.fingerprint.id] = newer
    assert known.on_inode((1, 3)) == (newer,)
    assert list(known.index()[1]["c" * 64]) == [newer]


def test_a_scan_reads_live_views_not_copies() -> None:
    # A scan in a thread only looks keys up; copying 100,000 entries per scan cost
    # 10 MiB at a time. It sees what the reader added or dropped meanwhile.
    a = checkpoint(4, "d")
    known = KnownFiles({a.fingerprint.id: a})
    by_inode, by_head = known.index()
    b = checkpoint(5, "d")
    known[b.fingerprint.id] = b
    del known[a.fingerprint.id]
    assert dict(by_inode) == {(1, 5): (b,)}
    assert list(by_head["d" * 64]) == [b]
    with pytest.raises(TypeError):
        by_inode[(1, 6)] = (b,)  # type: ignore[index]


@given(st.lists(st.tuples(st.booleans(), st.integers(1, 6), st.sampled_from("xyz")), max_size=40))
def test_indexes_match_a_rebuild(steps: list[tuple[bool, int, str]]) -> None:
    known = KnownFiles()
    for add, ino, head in steps:
        cp = checkpoint(ino, head)
        if add:
            known[cp.fingerprint.id] = cp
        else:
            known.pop(cp.fingerprint.id, None)
    by_inode, by_head = known.index()
    expected_inodes: dict[tuple[int, int], set[str]] = {}
    expected_heads: dict[str, set[str]] = {}
    for fid, cp in known.items():
        expected_inodes.setdefault((cp.fingerprint.dev, cp.fingerprint.ino), set()).add(fid)
        expected_heads.setdefault(cp.fingerprint.head_sha256, set()).add(fid)
    assert {k: {c.fingerprint.id for c in v} for k, v in by_inode.items()} == expected_inodes
    assert {k: {c.fingerprint.id for c in by_head[k]} for k in by_head} == expected_heads


def test_waiting_files_keep_their_order_and_count_inodes() -> None:
    waiting = WaitingFiles()
    waiting.replace({"/l/a": ("app", (1, 1)), "/l/b": ("app", (1, 2)), "/l/c": ("app", (1, 2))})
    assert len(waiting) == 3
    assert waiting.first(2) == [("app", "/l/a"), ("app", "/l/b")]
    assert waiting.first(-1) == []
    assert waiting.inodes() == {(1, 1), (1, 2)}

    # A targeted scan looked at a and b: a was opened, b still waits, d is new.
    waiting.update(["/l/a", "/l/b"], {"/l/b": ("app", (1, 2)), "/l/d": ("app", (1, 4))})
    assert not waiting.holds((1, 1))
    assert waiting.holds((1, 2)) and waiting.holds((1, 4))
    assert waiting.first(10) == [("app", "/l/c"), ("app", "/l/b"), ("app", "/l/d")]

    waiting.update(["/l/b", "/l/c"], {})
    assert not waiting.holds((1, 2))
    assert waiting.inodes() == {(1, 4)}


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["put", "forget", "ask"]), st.integers(1, 6), st.sampled_from("xy")
        ),
        max_size=40,
    )
)
def test_delivered_files_by_head_match_a_rebuild(steps: list[tuple[str, int, str]]) -> None:
    # Delivered files by first bytes: built when first asked for, kept up to date after.
    index = ShippedIndex()
    alive: dict[str, str] = {}  # fingerprint id: the letter its first line repeats
    for action, ino, letter in steps:
        head = (letter * 9 + "\n").encode()
        fp = Fingerprint(1, ino, len(head), hashlib.sha256(head).hexdigest())
        if action == "put":
            index.put([ShippedFile(fp, [(0, 10)])])
            alive[fp.id] = letter
        elif action == "forget":
            index.forget([fp.id])
            alive.pop(fp.id, None)
        if action != "ask":
            continue
        for probe in "xy":
            data = (probe * 9 + "\n").encode() + b"more"
            expected = {fid for fid, first in alive.items() if first == probe}
            assert {s.fingerprint.id for s in index.with_head(data)} == expected
