from shipper.batching import Batcher, BatchLimits
from shipper.sources.fingerprint import Fingerprint

FP = Fingerprint(dev=1, ino=2, head_len=10, head_sha256="00" * 32)


def make(max_bytes: int = 100, max_records: int = 1000, max_age: float = 5.0) -> Batcher:
    return Batcher(
        BatchLimits(max_bytes, max_records, max_age),
        source="app",
        fingerprint=FP,
        path="/l/app.log",
        position=0,
    )


def feed(batcher: Batcher, sizes: list[int], start: int = 0, now: float = 0.0):  # type: ignore[no-untyped-def]
    records = [b"x" * (n - 1) + b"\n" for n in sizes]
    ends, pos = [], start
    for n in sizes:
        pos += n
        ends.append(pos)
    return batcher.add(records, ends, [1.0] * len(sizes), now=now)


def test_cuts_by_bytes_without_splitting_records_and_ranges_are_contiguous() -> None:
    batcher = make(max_bytes=100)
    cut = feed(batcher, [40, 40, 40, 40, 40])
    assert [(b.start, b.end, b.lines) for b in cut] == [(0, 80, 2), (80, 160, 2)]
    rest = batcher.flush()
    assert rest is not None
    assert (rest.start, rest.end, rest.lines) == (160, 200, 1)
    assert all(b.nbytes <= 100 for b in cut)


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
    batcher.add([b"a\n", b"b\n"], [2, 4], [7.0, 9.0], now=0.0)
    batch = batcher.flush()
    assert batch is not None and batch.first_time == 7.0 and batch.body() == b"a\nb\n"


def test_resumes_at_its_starting_position() -> None:
    batcher = Batcher(
        BatchLimits(100, 100, 5), source="app", fingerprint=FP, path="p", position=1000
    )
    batcher.add([b"a\n"], [1002], [0.0], now=0.0)
    batch = batcher.flush()
    assert batch is not None and (batch.start, batch.end) == (1000, 1002)
