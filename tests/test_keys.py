from datetime import datetime, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shipper.keys import object_key

T = datetime(2026, 11, 25, 13, 7, 9, tzinfo=timezone.utc).timestamp()


def test_key_is_hive_partitioned_and_names_the_range() -> None:
    key = object_key(
        prefix="app", source="web", fingerprint_id="ab12", start=0, end=155, first_time=T
    )
    assert key == (
        "app/source=web/dt=2026-11-25/hour=13/"
        "ab12-00000000000000000000-00000000000000000155.ndjson.zst"
    )


def test_empty_prefix_has_no_leading_slash() -> None:
    key = object_key(prefix="", source="web", fingerprint_id="f", start=5, end=9, first_time=T)
    assert key.startswith("source=web/dt=2026-11-25/hour=13/")


def test_empty_range_is_refused() -> None:
    with pytest.raises(ValueError, match="empty byte range"):
        object_key(prefix="", source="s", fingerprint_id="f", start=9, end=9, first_time=T)


@given(
    st.integers(0, 2**62),
    st.integers(1, 2**40),
    st.floats(0, 4e9, allow_nan=False),
)
def test_same_inputs_same_key_and_ranges_sort(start: int, length: int, when: float) -> None:
    args = {"prefix": "p", "source": "s", "fingerprint_id": "f", "first_time": when}
    first = object_key(start=start, end=start + length, **args)  # type: ignore[arg-type]
    assert first == object_key(start=start, end=start + length, **args)  # type: ignore[arg-type]
    later = object_key(start=start + length, end=start + 2 * length, **args)  # type: ignore[arg-type]
    assert first.rsplit("/", 1)[1] < later.rsplit("/", 1)[1]
