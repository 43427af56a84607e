import itertools
import math
from types import SimpleNamespace
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from shipper.batch.batcher import Batch, Batcher, BatchLimits
from shipper.files.fingerprint import Fingerprint
from shipper.spool.sealer import _packs, _segment_text_len
from shipper.transform.records import NdjsonRecords

FP = Fingerprint(dev=1, ino=2, head_len=10, head_sha256="00" * 32)


def make(max_bytes: int = 100, max_records: int = 1000, max_age: float = 5.0) -> Batcher:
    return Batcher(
        BatchLimits(max_bytes, max_records, max_age),
        source="app",
        fingerprint=FP,
        path="/l/app.log",
        position=0,
    )


def encoded(records: list[bytes], ends: list[int], times: list[float]) -> NdjsonRecords:
    out = NdjsonRecords()
    for record, end, when in zip(records, ends, times, strict=True):
        out.add(record, end, when)
    return out


def feed(batcher: Batcher, sizes: list[int], start: int = 0, now: float = 0.0) -> list[Batch]:
    """Records of the given sizes, each as long as the input line it came from."""
    records = [bytes([65 + i % 26]) * (n - 1) + b"\n" for i, n in enumerate(sizes)]
    ends = list(itertools.accumulate(sizes, initial=start))[1:]
    return batcher.add(encoded(records, ends, [1.0] * len(sizes)), now=now)


def test_cuts_by_bytes_without_splitting_records_and_ranges_are_contiguous() -> None:
    batcher = make(max_bytes=100)
    cut = feed(batcher, [40, 40, 40, 40, 40])
    assert [(b.start, b.end, b.lines) for b in cut] == [(0, 80, 2), (80, 160, 2)]
    rest = batcher.flush()
    assert rest is not None
    assert (rest.start, rest.end, rest.lines) == (160, 200, 1)
    assert all(len(b.body) <= 100 for b in cut)
    # Bodies hold exactly their records, in order, across cuts.
    assert [bytes(b.body) for b in [*cut, rest]] == [
        b"A" * 39 + b"\n" + b"B" * 39 + b"\n",
        b"C" * 39 + b"\n" + b"D" * 39 + b"\n",
        b"E" * 39 + b"\n",
    ]


def test_exactly_full_batch_is_cut_at_once() -> None:
    batcher = make(max_bytes=80)
    cut = feed(batcher, [40, 40])
    assert [(b.start, b.end) for b in cut] == [(0, 80)]
    assert batcher.pending is None


def test_record_larger_than_max_bytes_gets_a_batch_of_its_own() -> None:
    batcher = make(max_bytes=100)
    cut = feed(batcher, [10, 500, 10])
    assert [(b.start, b.end) for b in cut] == [(0, 10), (10, 510)]
    assert batcher.pending is not None and batcher.pending.start == 510


def test_cuts_by_record_count() -> None:
    batcher = make(max_bytes=10**6, max_records=3)
    cut = feed(batcher, [5] * 7)
    assert [b.lines for b in cut] == [3, 3]
    assert batcher.position == 35


def test_age_limit_counts_from_the_first_record() -> None:
    batcher = make(max_age=5.0)
    assert not batcher.due(100.0)
    feed(batcher, [10], now=100.0)
    feed(batcher, [10], start=10, now=104.0)
    assert not batcher.due(104.9)
    assert batcher.due(105.0)
    batch = batcher.flush()
    assert batch is not None and (batch.start, batch.end) == (0, 20)
    assert batcher.flush() is None


def test_first_time_comes_from_the_first_record() -> None:
    batcher = make()
    batcher.add(encoded([b"a\n", b"b\n"], [2, 4], [7.0, 9.0]), now=0.0)
    batch = batcher.flush()
    assert batch is not None and batch.first_time == 7.0 and batch.body == b"a\nb\n"


def test_resumes_at_its_starting_position() -> None:
    batcher = Batcher(
        BatchLimits(100, 100, 5), source="app", fingerprint=FP, path="p", position=1000
    )
    batcher.add(encoded([b"a\n"], [1002], [0.0]), now=0.0)
    batch = batcher.flush()
    assert batch is not None and (batch.start, batch.end) == (1000, 1002)


@given(
    st.lists(st.integers(1, 300), min_size=1, max_size=60),
    st.integers(1, 400),
    st.integers(1, 10),
    st.integers(1, 7),
)
def test_batches_tile_the_input_and_respect_limits(
    sizes: list[int], max_bytes: int, max_records: int, chunk: int
) -> None:
    records = [bytes([65 + i % 26]) * (n - 1) + b"\n" for i, n in enumerate(sizes)]
    ends = list(itertools.accumulate(sizes))
    batcher = make(max_bytes=max_bytes, max_records=max_records)
    batches: list[Batch] = []
    for i in range(0, len(sizes), chunk):
        part = slice(i, i + chunk)
        batches += batcher.add(encoded(records[part], ends[part], [0.0] * len(ends[part])), 0.0)
    last = batcher.flush()
    batches += [last] if last else []
    assert b"".join(bytes(b.body) for b in batches) == b"".join(records)
    assert batches[0].start == 0 and batches[-1].end == sum(sizes)
    assert all(a.end == b.start for a, b in itertools.pairwise(batches))
    assert sum(b.records for b in batches) == len(sizes)
    for b in batches:
        assert b.records <= max_records
        assert len(b.body) == b.end - b.start
        assert len(b.body) <= max_bytes or b.records == 1


@given(
    st.lists(st.sampled_from(["kept", "dropped", "made"]), min_size=1, max_size=60),
    st.integers(1, 60),
    st.integers(1, 5),
)
def test_dropped_lines_and_made_records_keep_every_range_whole(
    kinds: list[str], max_bytes: int, max_records: int
) -> None:
    """Sampled-out lines (no bytes) are covered; a summary never starts an empty range."""
    out = NdjsonRecords()
    end = 0
    expected_body = b""
    inputs = 0
    for index, kind in enumerate(kinds):
        if kind == "made" and index > 0:
            record = b"S%d\n" % index  # shares the end of the line before it
            out.add(record, end, 0.0, lines=0)
            expected_body += record
            continue
        end += 10
        inputs += 1
        if kind == "dropped":
            out.skip(end, 0.0)
        else:
            record = b"L%d\n" % index
            out.add(record, end, 0.0)
            expected_body += record
    batcher = make(max_bytes=max_bytes, max_records=max_records)
    batches = batcher.add(out, 0.0)
    last = batcher.flush()
    batches += [last] if last else []
    assert b"".join(bytes(b.body) for b in batches) == expected_body
    assert batches[0].start == 0 and batches[-1].end == end
    assert all(a.end == b.start for a, b in itertools.pairwise(batches))
    assert all(b.end > b.start for b in batches)
    assert sum(b.lines for b in batches) == inputs


# ------------------------------------------------------- packing small files together


def owing(ino: int, size: int, records: int) -> Any:
    """What ``_packs`` looks at of an open file: its first owed batch."""
    fp = Fingerprint(dev=1, ino=ino, head_len=10, head_sha256="00" * 32)
    batch = Batch("app", fp, f"/l/{ino}.log", 0, size, bytearray(size), records, records)
    return SimpleNamespace(unsealed=[batch])


@given(
    st.lists(st.tuples(st.integers(1, 400), st.integers(1, 30)), min_size=1, max_size=120),
    st.integers(100, 2000),
    st.integers(5, 200),
    st.sampled_from([None, 1024, 200]),
)
def test_packs_keep_order_and_fit_the_limits(
    files: list[tuple[int, int]], max_bytes: int, max_records: int, described_at_most: int | None
) -> None:
    actives = [owing(n, size, records) for n, (size, records) in enumerate(files, 1)]
    limits = BatchLimits(max_bytes, max_records, 5.0)
    packs = list(_packs(actives, limits, described_at_most=described_at_most))
    budget = math.inf if described_at_most is None else described_at_most
    assert [a for pack in packs for a in pack] == actives  # each once, in order
    for pack in packs:
        batches = [a.unsealed[0] for a in pack]
        described = sum(_segment_text_len(b) for b in batches)
        fits = (
            sum(len(b.body) for b in batches) <= max_bytes
            and sum(b.records for b in batches) <= max_records
            and described <= budget
        )
        # A batch alone may be over the limits (it was cut so); packs of several fit.
        assert fits or len(pack) == 1
    # Nothing that would fit is left for the next pack.
    for pack, after in itertools.pairwise(packs):
        first = after[0].unsealed[0]
        batches = [a.unsealed[0] for a in pack]
        assert (
            sum(len(b.body) for b in batches) + len(first.body) > max_bytes
            or sum(b.records for b in batches) + first.records > max_records
            or sum(_segment_text_len(b) for b in [*batches, first]) > budget
        )


@given(
    st.lists(st.lists(st.integers(1, 120), max_size=12), min_size=1, max_size=6),
    st.integers(1, 300),
    st.integers(1, 8),
    st.floats(0, 10),
)
def test_cutting_by_bounds_gives_what_cutting_record_by_record_gives(
    chunks: list[list[int]], max_bytes: int, max_records: int, step: float
) -> None:
    # Chunks of one record per line: ``add`` bisects on their bounds; ``add_each``
    # steps through them. Same batches, same open batch, same position.
    fast, slow = make(max_bytes, max_records), make(max_bytes, max_records)
    end, when, got, want = 0, 0.0, [], []
    for sizes in chunks:
        records = [bytes([65 + i % 26]) * (n - 1) + b"\n" for i, n in enumerate(sizes)]
        ends = list(itertools.accumulate(sizes, initial=end))[1:]
        times = [when + i * step for i in range(len(sizes))]
        end = ends[-1] if ends else end
        when += 100.0
        chunk = encoded(records, ends, times)
        assert chunk.plain
        got += fast.add(chunk, now=when)
        want += slow.add_each(encoded(records, ends, times), now=when)
    assert got == want
    assert fast.pending == slow.pending
    assert fast.position == slow.position


def test_a_chunk_with_dropped_lines_is_not_plain() -> None:
    chunk = encoded([b"a\n"], [2], [0.0])
    assert chunk.plain
    chunk.skip(4, 0.0)
    assert not chunk.plain
