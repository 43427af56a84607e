from pathlib import Path

import orjson
import pytest

from shipper.batch.pack import PackedBatch
from shipper.batch.segment import Segment
from shipper.errors import SpoolCorruptError
from shipper.files.fingerprint import Fingerprint
from shipper.spool.entry import SPOOL_FORMAT_VERSION, SpoolEntry, decode_entry, encode_entry
from shipper.spool.spool import Spool
from shipper.tail.checkpoints import Checkpoint, CheckpointStore

FP = Fingerprint(dev=1, ino=2, head_len=10, head_sha256="ab" * 32)
OTHER = Fingerprint(dev=1, ino=3, head_len=10, head_sha256="cd" * 32)


def seal(
    spool: Spool, start: int, end: int, fp: Fingerprint = FP, body: bytes = b"zzz"
) -> SpoolEntry:
    return spool.seal(
        PackedBatch(
            key=f"k-{start}-{end}",
            source="app",
            segments=(Segment(fp, "/l/app.log", start, end, 3),),
            records=3,
            body=body,
            body_sha256="00" * 32,
            uncompressed_bytes=99,
            codec="zstd",
            first_time=1.0,
        )
    )


def test_sealed_entries_survive_a_restart_in_seal_order(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.recover()
    a, b = seal(spool, 0, 10), seal(spool, 10, 20)
    again = Spool(tmp_path)
    entries, damaged = again.recover()
    assert damaged == []
    assert [(e.key, e.segments[0].start, e.segments[0].end) for e in entries] == [
        ("k-0-10", 0, 10),
        ("k-10-20", 10, 20),
    ]
    assert again.used_bytes == a.size + b.size
    assert again.read_body(entries[1]) == b"zzz"
    # New entries continue the sequence instead of overwriting.
    c = seal(again, 20, 30)
    assert c.seq == b.seq + 1


def test_torn_temp_write_is_discarded(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.recover()
    good = seal(spool, 0, 10)
    (tmp_path / ".0000000000000002.entry.tmp").write_bytes(good.path.read_bytes()[:20])
    entries, _ = Spool(tmp_path).recover()
    assert [e.key for e in entries] == ["k-0-10"]
    assert not (tmp_path / ".0000000000000002.entry.tmp").exists()


@pytest.mark.parametrize(
    ("damage", "from_header"),
    [
        ("truncate", True),
        ("flip_body", True),
        ("flip_header", False),
        ("magic", False),
        ("empty", False),
    ],
)
def test_damaged_entry_is_reported_with_its_range_not_uploaded(
    tmp_path: Path, damage: str, from_header: bool
) -> None:
    spool = Spool(tmp_path)
    spool.recover()
    entry = seal(spool, 100, 250, body=b"z" * 64)
    data = bytearray(entry.path.read_bytes())
    if damage == "truncate":
        data = data[:-5]
    elif damage == "flip_body":
        data[-40] ^= 0xFF
    elif damage == "flip_header":
        data[20] ^= 0x01
    elif damage == "magic":
        data[0:8] = b"NOTSPOOL"
    else:
        data = bytearray()
    entry.path.write_bytes(bytes(data))
    again = Spool(tmp_path)
    entries, damaged = again.recover()
    assert entries == []
    assert again.used_bytes == 0
    [found] = damaged
    # The range is known either way: from the header, or from the entry's name.
    assert (found.fingerprint_id, found.start, found.end) == (FP.id, 100, 250)
    assert (found.key is not None) == from_header
    if from_header:
        assert (found.source, found.file_path, found.first_time) == ("app", "/l/app.log", 1.0)
        assert found.fingerprint == FP
    # A new entry never reuses the damaged one's sequence number.
    assert seal(again, 250, 300).seq == entry.seq + 1
    again.set_aside(found)
    assert (tmp_path / "corrupt" / entry.path.name).exists()
    assert not entry.path.exists()


def seal_packed(spool: Spool) -> SpoolEntry:
    """One entry holding ranges of two files."""
    return spool.seal(
        PackedBatch(
            key="k-packed",
            source="app",
            segments=(
                Segment(FP, "/l/app.log", 0, 40, 2),
                Segment(OTHER, "/l/other.log", 0, 60, 3),
            ),
            records=5,
            body=b"y" * 64,
            body_sha256="00" * 32,
            uncompressed_bytes=99,
            codec="zstd",
            first_time=1.0,
        )
    )


@pytest.mark.parametrize("damage", ["intact", "truncate", "flip_body", "flip_header", "magic"])
def test_an_entry_of_several_files_knows_every_range_when_damaged(
    tmp_path: Path, damage: str
) -> None:
    spool = Spool(tmp_path)
    spool.recover()
    entry = seal_packed(spool)
    assert entry.path.name.endswith("-2.entry")
    data = bytearray(entry.path.read_bytes())
    body_end = data.rindex(b"y" * 64) + 64
    if damage == "truncate":
        data = data[: body_end - 5]  # into the body: the trailer is gone too
    elif damage == "flip_body":
        data[body_end - 3] ^= 0xFF
    elif damage == "flip_header":
        data[20] ^= 0x01
    elif damage == "magic":
        data[0:8] = b"NOTSPOOL"
    entry.path.write_bytes(bytes(data))
    entries, damaged = Spool(tmp_path).recover()
    if damage == "intact":
        [again] = entries
        assert again.segments == entry.segments and damaged == []
        assert Spool(tmp_path).read_body(again) == b"y" * 64
        return
    [found] = damaged
    assert entries == [] and found.unknown_files == 0
    assert (found.fingerprint_id, found.start, found.end) == (FP.id, 0, 40)
    assert [(s.fingerprint.id, s.start, s.end) for s in found.others] == [(OTHER.id, 0, 60)]


def test_an_entry_of_several_files_damaged_at_both_ends_says_what_is_unknown(
    tmp_path: Path,
) -> None:
    spool = Spool(tmp_path)
    spool.recover()
    entry = seal_packed(spool)
    data = bytearray(entry.path.read_bytes())
    data[20] ^= 0x01
    data[-1] ^= 0x01
    entry.path.write_bytes(bytes(data))
    [found] = Spool(tmp_path).recover()[1]
    assert (found.fingerprint_id, found.start, found.end) == (FP.id, 0, 40)
    assert found.others == () and found.unknown_files == 1


def test_decode_rejects_a_bad_checksum() -> None:
    data = bytearray(encode_entry({"version": SPOOL_FORMAT_VERSION}, b"body"))
    data[-1] ^= 1
    with pytest.raises(SpoolCorruptError, match="body checksum") as raised:
        decode_entry(bytes(data))
    assert raised.value.header is not None
    data[-1] ^= 1
    data[len(b"SHPSPOOL") + 4] ^= 1
    with pytest.raises(SpoolCorruptError, match="header checksum") as raised:
        decode_entry(bytes(data))
    assert raised.value.header is None


def legacy_checkpoints(path: Path, *offsets: int) -> None:
    """``checkpoints.json`` as the first state format saved it, one generation per offset."""
    for offset in offsets:
        if path.exists():
            path.replace(path.with_name(path.name + ".1"))
        doc = {"version": 1, "checkpoints": [Checkpoint(FP, "app", "/l/app.log", offset).to_json()]}
        path.write_bytes(orjson.dumps(doc))


def test_legacy_checkpoints_fall_back_to_the_previous_generation(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path / "checkpoints.json")
    legacy_checkpoints(store.path, 10, 20)
    assert store.load()[FP.id].offset == 20
    (tmp_path / "checkpoints.json").write_bytes(b"{garbage")
    assert store.load()[FP.id].offset == 10


def test_legacy_checkpoints_both_generations_damaged_are_set_aside(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path / "checkpoints.json")
    legacy_checkpoints(store.path, 10, 20)
    (tmp_path / "checkpoints.json").write_bytes(b"\x00")
    (tmp_path / "checkpoints.json.1").write_bytes(b"[]")
    assert store.load() == {}
    assert (tmp_path / "checkpoints.json.corrupt").exists()
    assert (tmp_path / "checkpoints.json.1.corrupt").exists()
