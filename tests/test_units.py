"""Size parsing: the config accepts human sizes, so their edge cases must be pinned down."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shipper.units import GiB, KiB, MiB, TiB, format_size, parse_size


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (0, 0),
        (42, 42),
        ("42", 42),
        ("42B", 42),
        ("8MiB", 8 * MiB),
        ("512KiB", 512 * KiB),
        ("1GiB", GiB),
        ("2TiB", 2 * TiB),
        ("100KB", 100_000),
        ("10MB", 10_000_000),
        ("3GB", 3_000_000_000),
        ("1TB", 10**12),
        ("1.5MiB", 1_572_864),
        ("0.5KiB", 512),
        ("8 mib", 8 * MiB),
        ("  8 MIB  ", 8 * MiB),
        ("4kb", 4000),
    ],
)
def test_parse_size_accepts(text: int | str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (-1, "invalid size -1: must not be negative"),
        ("-1KiB", 'invalid size "-1KiB": must not be negative'),
        (
            "8XB",
            'invalid size "8XB": unknown unit "XB" (use B, KB, MB, GB, TB, KiB, MiB, GiB or TiB)',
        ),
        ("", 'invalid size "": expected a number with an optional unit, like "8MiB" or "100KB"'),
        (
            "MiB",
            'invalid size "MiB": expected a number with an optional unit, like "8MiB" or "100KB"',
        ),
        ("1.5B", 'invalid size "1.5B": not a whole number of bytes'),
        (True, 'invalid size True: expected an integer or a string like "8MiB", got bool'),
        (1.5, 'invalid size 1.5: expected an integer or a string like "8MiB", got float'),
    ],
)
def test_parse_size_rejects(value: object, message: str) -> None:
    with pytest.raises(ValueError) as excinfo:
        parse_size(value)  # type: ignore[arg-type]
    assert str(excinfo.value) == message


@pytest.mark.parametrize(
    ("n", "expected"),
    [
        (0, "0B"),
        (1023, "1023B"),
        (1024, "1.0KiB"),
        (1536, "1.5KiB"),
        (8 * MiB, "8.0MiB"),
        (GiB, "1.0GiB"),
    ],
)
def test_format_size(n: int, expected: str) -> None:
    assert format_size(n) == expected


@given(
    n=st.integers(min_value=0, max_value=10**6),
    unit=st.sampled_from([("KiB", KiB), ("MiB", MiB), ("GiB", GiB), ("TiB", TiB)]),
)
def test_binary_units_round_trip(n: int, unit: tuple[str, int]) -> None:
    name, factor = unit
    assert parse_size(f"{n}{name}") == n * factor
    assert parse_size(f"{n} {name.upper()}") == n * factor
    if 1 <= n < 1024:
        assert parse_size(format_size(n * factor)) == n * factor
