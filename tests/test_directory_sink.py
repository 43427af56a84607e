from pathlib import Path

import pytest

from shipper.deliver.sinks.base import ObjectToPut, PutOutcome
from shipper.deliver.sinks.directory import DirectorySink
from shipper.errors import SinkError


def test_put_is_atomic_and_never_overwrites(tmp_path: Path) -> None:
    sink = DirectorySink(tmp_path)
    first = ObjectToPut(key="p/source=a/x.ndjson.zst", body=b"one", metadata={})
    assert sink.put(first) is PutOutcome.STORED
    again = ObjectToPut(key=first.key, body=b"two", metadata={})
    assert sink.put(again) is PutOutcome.ALREADY_PRESENT
    assert (tmp_path / first.key).read_bytes() == b"one"
    assert [p.name for p in (tmp_path / "p/source=a").iterdir()] == ["x.ndjson.zst"]


def test_key_escaping_the_root_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SinkError) as info:
        DirectorySink(tmp_path / "root").put(ObjectToPut(key="../evil", body=b"", metadata={}))
    assert not info.value.retriable


def test_unwritable_root_is_a_retriable_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    with pytest.raises(SinkError) as info:
        DirectorySink(blocker).put(ObjectToPut(key="a/b", body=b"x", metadata={}))
    assert info.value.retriable
