from pathlib import Path

import pytest

from shipper.encoding import EncodedBatch
from shipper.errors import SpoolCorruptError
from shipper.ledger import Ledger
from shipper.recovery import resume_positions
from shipper.sources.checkpoints import Checkpoint, CheckpointStore
from shipper.sources.fingerprint import Fingerprint
from shipper.spool import (
    SPOOL_FORMAT_VERSION,
    Segment,
    Spool,
    SpoolEntry,
    decode_entry,
    encode_entry,
)

FP = Fingerprint(dev=1, ino=2, head_len=10, head_sha256="ab" * 32)
OTHER = Fingerprint(dev=1, ino=3, head_len=10, head_sha256="cd" * 32)


def seal(
    spool: Spool, start: int, end: int, fp: Fingerprint = FP, body: bytes = b"zzz"
) -> SpoolEntry:
    return spool.seal(
        EncodedBatch(
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


def test_ledger_drops_a_torn_last_line_and_keeps_appending(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    spool.recover()
    entry = seal(spool, 0, 10)
    ledger = Ledger(tmp_path / "ledger.jsonl")
    ledger.open()
    ledger.append(entry, outcome="stored")
    ledger.close()
    with (tmp_path / "ledger.jsonl").open("ab") as f:
        f.write(b'{"v":1,"key":"half')
    ledger = Ledger(tmp_path / "ledger.jsonl")
    records = ledger.open()
    assert [(r.key, r.segment.end) for r in records] == [("k-0-10", 10)]
    ledger.append(seal(spool, 10, 20), outcome="already_present")
    ledger.close()
    assert [r.segment.end for r in Ledger(tmp_path / "ledger.jsonl").open()] == [10, 20]


def test_checkpoints_fall_back_to_the_previous_generation(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path / "checkpoints.json")
    store.save({FP.id: Checkpoint(FP, "app", "/l/app.log", 10)})
    store.save({FP.id: Checkpoint(FP, "app", "/l/app.log", 20)})
    assert store.load()[FP.id].offset == 20
    (tmp_path / "checkpoints.json").write_bytes(b"{garbage")
    assert store.load()[FP.id].offset == 10


def test_checkpoints_both_generations_damaged_are_set_aside(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path / "checkpoints.json")
    store.save({FP.id: Checkpoint(FP, "app", "/l/app.log", 10)})
    store.save({FP.id: Checkpoint(FP, "app", "/l/app.log", 20)})
    (tmp_path / "checkpoints.json").write_bytes(b"\x00")
    (tmp_path / "checkpoints.json.1").write_bytes(b"[]")
    assert store.load() == {}
    assert (tmp_path / "checkpoints.json.corrupt").exists()
    assert (tmp_path / "checkpoints.json.1.corrupt").exists()


def test_resume_takes_the_largest_of_checkpoint_spool_and_ledger(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    spool.recover()
    spooled = [seal(spool, 100, 150), seal(spool, 0, 40, fp=OTHER)]
    ledger = Ledger(tmp_path / "ledger.jsonl")
    ledger.open()
    ledger.append(seal(spool, 150, 170), outcome="stored")
    ledger.close()
    delivered = Ledger(tmp_path / "ledger.jsonl").open()
    merged = resume_positions({FP.id: Checkpoint(FP, "app", "/l/app.log", 120)}, spooled, delivered)
    assert merged[FP.id].offset == 170
    assert merged[OTHER.id].offset == 40
    only_checkpoint = resume_positions({FP.id: Checkpoint(FP, "app", "p", 500)}, spooled, delivered)
    assert only_checkpoint[FP.id].offset == 500
