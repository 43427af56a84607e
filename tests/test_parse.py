from datetime import datetime, timezone

from shipper.transform.chain import Chain, DropRecord
from shipper.transform.enrich import Enrich
from shipper.transform.parse import parse_line, record_time


def test_json_object_is_the_record() -> None:
    assert parse_line(b'{"a": 1, "message": "hi"}') == ({"a": 1, "message": "hi"}, [])


def test_crlf_line_is_parsed_without_its_cr() -> None:
    assert parse_line(b'{"a": 1}\r') == ({"a": 1}, [])


def test_plain_text_scalar_and_array_are_wrapped() -> None:
    assert parse_line(b"hello world") == ({"message": "hello world"}, ["wrapped"])
    assert parse_line(b"42") == ({"message": 42}, ["wrapped"])
    assert parse_line(b"[1, 2]") == ({"message": [1, 2]}, ["wrapped"])


def test_invalid_utf8_is_kept_with_replacement_and_flagged() -> None:
    record, flags = parse_line(b"caf\xe9 \x00ok")
    assert record == {"message": "caf\ufffd \x00ok"}
    assert flags == ["invalid_utf8"]


def test_record_time_reads_the_seed_formatter_timestamp() -> None:
    expected = datetime(2024, 1, 15, 10, 30, 45, 123456, tzinfo=timezone.utc).timestamp()
    assert record_time({"timestamp": "2024-01-15T10:30:45.123456Z"}, 0.0) == expected
    assert record_time({"timestamp": "2024-01-15T10:30:45.123456"}, 0.0) == expected


def test_record_time_falls_back_for_missing_or_absurd_values() -> None:
    assert record_time({}, 5.0) == 5.0
    assert record_time({"timestamp": "yesterday"}, 5.0) == 5.0
    assert record_time({"ts": 1e300}, 5.0) == 5.0
    assert record_time({"ts": True}, 5.0) == 5.0
    assert record_time({"ts": 1_700_000_000_000}, 5.0) == 1_700_000_000.0


def test_enrich_never_overwrites_the_applications_field() -> None:
    chain = Chain([], flags_field="shipper_flags")
    enrich = Enrich(
        {"host": "h1", "service": "orch"}, collision_prefix="shipper_", counters=chain.counters
    )
    assert enrich({"host": "app-host", "x": 1}) == {
        "host": "app-host",
        "x": 1,
        "shipper_host": "h1",
        "service": "orch",
    }
    assert chain.counters["enrich_collision"] == 1


def test_chain_encodes_ndjson_flags_partial_and_honours_drops() -> None:
    def drop_noise(record: dict[str, object]) -> dict[str, object]:
        if record.get("noise"):
            raise DropRecord
        return record

    chain = Chain([drop_noise], flags_field="shipper_flags")
    out = chain.run(
        [b'{"a":1}', b'{"noise":true}', b"tail"],
        [8, 23, 27],
        read_time=3.0,
        line_flags={2: ("partial",)},
    )
    assert bytes(out.data) == (
        b'{"a":1}\n{"message":"tail","shipper_flags":["wrapped","partial"]}\n'
    )
    # The dropped line is an entry of no bytes: its batch's range still covers it.
    assert out.bounds == [8, 8, len(out.data)]
    assert out.ends == [8, 23, 27]
    assert [out.time_at(i) for i in range(len(out))] == [3.0, 3.0, 3.0]
    assert chain.counters["dropped"] == 1
