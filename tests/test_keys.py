from datetime import datetime, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shipper.batch.objectkey import DEFAULT_KEY_TEMPLATE, KeyTemplateError, compile_template

T = datetime(2026, 11, 25, 13, 7, 9, tzinfo=timezone.utc).timestamp()


def key(template: str = DEFAULT_KEY_TEMPLATE, *, prefix: str = "", **changes: object) -> str:
    args: dict[str, object] = {
        "source": "web",
        "fingerprint_id": "ab12",
        "start": 0,
        "end": 155,
        "first_time": T,
    }
    args.update(changes)
    keys = compile_template(template, prefix=prefix, static={"env": "prod"}, host="h1")
    return keys.render(**args)  # type: ignore[arg-type]


def test_default_key_is_hive_partitioned_and_names_the_range() -> None:
    assert key(prefix="app") == (
        "app/source=web/host=h1/dt=2026-11-25/hour=13/"
        "ab12-00000000000000000000-00000000000000000155.ndjson.zst"
    )


def test_empty_prefix_has_no_leading_slash() -> None:
    assert key().startswith("source=web/host=h1/dt=2026-11-25/hour=13/")


def test_template_fields_static_fields_and_the_codec_suffix() -> None:
    template = "{env}/%Y/%m/%d/{host}/{source}/{fingerprint}_{start}_{end}"
    assert key(template) == (
        "prod/2026/11/25/h1/web/ab12_00000000000000000000_00000000000000000155.ndjson.zst"
    )
    gz = compile_template(DEFAULT_KEY_TEMPLATE, codec="gzip")
    assert gz.render(source="s", fingerprint_id="f", start=0, end=1, first_time=T).endswith(
        ".ndjson.gz"
    )


def test_a_percent_in_a_field_value_is_not_a_time_directive() -> None:
    assert "source=we%Yb/" in key(source="we%Yb")


def test_empty_range_is_refused() -> None:
    with pytest.raises(ValueError, match="empty byte range"):
        key(start=9, end=9)


@pytest.mark.parametrize(
    ("template", "problem"),
    [
        ("{host}/{source}/{start}-{end}", "must contain {fingerprint}"),
        ("{host}/{fingerprint}/{start}", "must contain {end}"),
        ("%Y/{host}/{fingerprint}", "must contain {start}, {end}"),
        ("{fingerprint}-{start}-{end}", "must contain {host}"),
        ("{host}/{fingerprint}-{start}-{end}-{pid}", 'unknown field "{pid}"'),
        ("%a/{host}/{fingerprint}-{start}-{end}", '"%a" depends on more than the time'),
        ("%c{host}/{fingerprint}-{start}-{end}", '"%c" depends'),
        ("x%/{host}/{fingerprint}-{start}-{end}", '"%/" depends'),
        ("{host}/{fingerprint}-{start}-{end}%", '"%" depends'),
        ("{host}/{fingerprint:>5}-{start}-{end}", "format specs"),
        ("{host}/{fingerprint!r}-{start}-{end}", "format specs"),
        ("{host}/{fingerprint-{start}-{end}", "unbalanced braces"),
        ("/{host}/{fingerprint}-{start}-{end}", 'must not start with "/"'),
        ("a//{host}/{fingerprint}-{start}-{end}", '"//"'),
        ("../{host}/{fingerprint}-{start}-{end}", '".."'),
        ("x" * 800 + "{host}/{fingerprint}-{start}-{end}", "longer than 768 bytes"),
    ],
)
def test_templates_that_are_not_deterministic_or_unique_are_refused(
    template: str, problem: str
) -> None:
    with pytest.raises(KeyTemplateError) as raised:
        compile_template(template, static={"env": "prod"})
    assert problem in str(raised.value)


def test_static_fields_are_checked() -> None:
    with pytest.raises(KeyTemplateError, match="would hide the batch field"):
        compile_template(DEFAULT_KEY_TEMPLATE, static={"source": "x"})
    with pytest.raises(KeyTemplateError, match='"a/b"'):
        compile_template(DEFAULT_KEY_TEMPLATE, static={"env": "a/b"})


@given(
    st.integers(0, 2**62),
    st.integers(1, 2**40),
    st.floats(0, 4e9, allow_nan=False),
)
def test_same_inputs_same_key_and_ranges_sort(start: int, length: int, when: float) -> None:
    first = key(start=start, end=start + length, first_time=when)
    assert first == key(start=start, end=start + length, first_time=when)
    later = key(start=start + length, end=start + 2 * length, first_time=when)
    assert first.rsplit("/", 1)[1] < later.rsplit("/", 1)[1]


def test_a_partition_is_the_key_without_the_files_range() -> None:
    keys = compile_template(DEFAULT_KEY_TEMPLATE, prefix="app", static={}, host="h1")
    assert (
        keys.partition(source="web", first_time=T) == "source=web/host=h1/dt=2026-11-25/hour=13/--"
    )
    same_hour = keys.partition(source="web", first_time=T + 60)
    next_hour = keys.partition(source="web", first_time=T + 3600)
    other_source = keys.partition(source="db", first_time=T)
    assert same_hour == keys.partition(source="web", first_time=T)
    assert len({same_hour, next_hour, other_source}) == 3


def test_partitions_are_remembered_by_the_second_and_no_coarser() -> None:
    keys = compile_template(
        "{source}/{host}/%H%M%S/{fingerprint}-{start}-{end}", prefix="", static={}, host="h1"
    )
    first = keys.partition(source="web", first_time=T + 0.1)
    assert keys.partition(source="web", first_time=T + 0.9) == first == "web/h1/130709/--"
    assert keys.partition(source="web", first_time=T + 1.0) == "web/h1/130710/--"
    assert keys.partition(source="db", first_time=T + 0.5) == "db/h1/130709/--"
