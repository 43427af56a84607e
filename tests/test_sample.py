"""Sampling: unit and property tests calling the sampler directly."""

import re
from collections import Counter
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from shipper.transform.sample import CapLimit, FieldCondition, Sampler, SampleRule, key_fraction


def sampler(*rules: SampleRule, cap: CapLimit | None = None, **kwargs: Any) -> Sampler:
    return Sampler(rules=rules, counters=Counter(), cap=cap, **kwargs)


def rule(rate: float, name: str = "noise", key: str | None = None, **match: Any) -> SampleRule:
    conditions = tuple(
        FieldCondition((field,), regex=value)
        if isinstance(value, re.Pattern)
        else FieldCondition(tuple(field.split("__")), values=tuple(value))
        for field, value in match.items()
    )
    return SampleRule(name, rate, conditions, None if key is None else (key,))


def keep(s: Sampler, record: dict[str, Any], when: float = 0.0, *, text: bool = False) -> bool:
    return s.keep(record, orjson.dumps(record), when, text=text)


def test_rules_match_on_equality_lists_regexes_and_nested_fields() -> None:
    s = sampler(
        rule(0.0, "health", message=re.compile(r"^GET /healthz")),
        rule(0.0, "debug", level=["DEBUG", "TRACE"], logger=["sql"]),
        rule(0.0, "status", http__status=[200]),
    )
    assert not keep(s, {"message": "GET /healthz 200"})
    assert keep(s, {"message": "POST /orders"})
    assert not keep(s, {"level": "DEBUG", "logger": "sql"})
    assert keep(s, {"level": "DEBUG", "logger": "api"})  # every condition must hold
    assert not keep(s, {"http": {"status": 200}})
    assert not keep(s, {"http.status": 200.0})  # a flat dotted key; 200 equals 200.0
    assert keep(s, {"http": {"status": True}})  # true is not 1
    assert s.counters["sampled_out_health"] == 1 and s.counters["sampled_out"] == 4


def test_warnings_and_errors_are_never_sampled_out() -> None:
    s = sampler(rule(0.0, message=re.compile("x")))
    for level in ("WARNING", "warn", "ERROR", "critical", "FATAL", 40):
        assert keep(s, {"level": level, "message": "x"})
    assert keep(s, {"levelname": "ERROR", "message": "x"})
    assert keep(s, {"severity": "Error", "message": "x"})
    assert not keep(s, {"level": "INFO", "message": "x"})
    assert not keep(s, {"level": "nonsense", "message": "x"})
    # Plain text: the level word near the start counts.
    assert keep(s, {"message": "2026-01-02 10:00:00 ERROR x failed"}, text=True)
    assert not keep(s, {"message": "2026-01-02 10:00:00 INFO x done"}, text=True)
    stricter = sampler(rule(0.0, message=re.compile("x")), keep_level=40)
    assert not keep(stricter, {"level": "WARNING", "message": "x"})


def test_the_decision_follows_the_key_and_kept_records_carry_the_rate() -> None:
    s = sampler(rule(0.5, level=["INFO"]), key_field=("trace_id",))
    for trace in range(200):
        decisions = {keep(s, {"level": "INFO", "trace_id": trace, "n": n}) for n in range(5)}
        assert len(decisions) == 1  # a whole trace is kept or dropped together
    record = {"level": "INFO", "trace_id": "t1"}
    while not keep(s, record):
        record["trace_id"] += "x"
    assert record["sample_rate"] == 0.5


def test_the_applications_own_rate_is_multiplied_in() -> None:
    s = sampler(rule(1 - 1e-12, level=["INFO"]))
    record: dict[str, Any] = {"level": "INFO", "sampled": True, "sample_rate": 0.01}
    assert keep(s, record)
    assert abs(record["sample_rate"] - 0.01) < 1e-9


def test_a_lower_rate_keeps_a_subset_of_a_higher_one() -> None:
    keys = [f"user-{i}".encode() for i in range(2000)]
    at_10 = {k for k in keys if key_fraction(k) < 0.10}
    at_30 = {k for k in keys if key_fraction(k) < 0.30}
    assert at_10 < at_30


@settings(max_examples=20, deadline=None)
@given(st.floats(0.02, 0.98), st.integers(0, 2**32))
def test_kept_fraction_is_the_rate_within_one_point(rate: float, salt: int) -> None:
    s = sampler(rule(rate, level=["INFO"]), key_field=("user_id",))
    n = 100_000
    kept = sum(keep(s, {"level": "INFO", "user_id": f"{salt}-{i}"}) for i in range(n))
    assert abs(kept / n - rate) <= 0.01
    # Deterministic: a second sampler decides every record the same way.
    again = sampler(rule(rate, level=["INFO"]), key_field=("user_id",))
    assert all(
        keep(s, {"level": "INFO", "user_id": f"{salt}-{i}"})
        == keep(again, {"level": "INFO", "user_id": f"{salt}-{i}"})
        for i in range(500)
    )


def test_without_a_key_the_line_decides() -> None:
    s = sampler(rule(0.5, level=["INFO"]), key_field=("trace_id",))
    lines = [b'{"level":"INFO","n":%d}' % i for i in range(4000)]
    kept = [s.keep(orjson.loads(line), line, 0.0, text=False) for line in lines]
    assert kept == [s.keep(orjson.loads(line), line, 0.0, text=False) for line in lines]
    assert 1800 < sum(kept) < 2200


def test_the_cap_absorbs_a_burst_and_a_summary_says_how_many() -> None:
    cap = CapLimit(("message",), max_per_sec=10, summary_interval_secs=60)
    s = sampler(cap=cap)
    t0 = 1_700_000_000.0
    kept = [keep(s, {"message": "disk slow"}, t0 + i / 1000) for i in range(500)]
    assert sum(kept) == 10
    assert keep(s, {"message": "rare event"}, t0 + 0.6)  # another key passes
    assert keep(s, {"level": "ERROR", "message": "disk slow"}, t0 + 0.7)  # errors pass
    assert s.summaries(t0 + 30) == []  # not due yet
    assert sum(keep(s, {"message": "disk slow"}, t0 + 1.5) for _ in range(20)) == 10
    [summary] = s.summaries(t0 + 61)
    assert summary["suppressed"] == 500 and summary["cap_key"] == "disk slow"
    assert summary["from"] == "2023-11-14T22:13:20.010000Z"
    assert s.counters["capped"] == 500
    assert s.summaries(t0 + 200) == []  # reported once


def test_summaries_are_bounded_to_the_largest_keys() -> None:
    s = sampler(cap=CapLimit(("message",), max_per_sec=1, summary_interval_secs=1))
    for i in range(300):
        for _ in range(3 if i < 150 else 2):
            keep(s, {"message": f"m{i}"}, 5.0)
    summaries = s.summaries(10.0)
    assert len(summaries) == 101
    assert summaries[-1]["cap_key"] is None
    assert sum(x["suppressed"] for x in summaries) == 150 * 2 + 150 * 1
