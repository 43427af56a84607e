"""``[sample]``: rules, the level always kept, and the cap."""

from __future__ import annotations

from collections.abc import Mapping

from shipper.config.model import SampleSettings, allowed_keys
from shipper.config.reader import (
    COUNTER_NAME_RE,
    Declared,
    Table,
    compile_linear_pattern,
    join_path,
)
from shipper.errors import ConfigProblem
from shipper.transform.sample import LEVELS, CapLimit, FieldCondition, SampleRule

_SAMPLE_KEYS = (
    "key_field",
    "keep_levels_at_or_above",
    "level_fields",
    "rate_field",
    "rules",
    "cap",
)
_RULE_KEYS = ("name", "rate", "match", "key_field")


_CAP_KEYS = allowed_keys(CapLimit)


def parse_sample(table: Table | None) -> SampleSettings:
    if table is None:
        return SampleSettings()
    table.check_keys(_SAMPLE_KEYS)
    key_field = table.optional_string("key_field")
    declared = Declared(table, SampleSettings)
    keep_level: int = declared.default("keep_level")
    level_name = table.optional_string("keep_levels_at_or_above")
    if level_name is not None:
        if level_name.upper() in LEVELS:
            keep_level = LEVELS[level_name.upper()]
        else:
            names = ", ".join(sorted({n for n in LEVELS if n.isalpha()}))
            shown = table.shown("keep_levels_at_or_above", level_name)
            table.problem("keep_levels_at_or_above", f"unknown level {shown} (one of {names})")
    level_fields = table.string_list("level_fields") if "level_fields" in table.data else None
    cap_table = table.table("cap") if "cap" in table.data else None
    return SampleSettings(
        rules=tuple(_parse_rules(table)),
        key_field=None if key_field is None else field_path(key_field),
        keep_level=keep_level,
        level_fields=(
            declared.default("level_fields")
            if level_fields is None
            else tuple(field_path(f) for f in level_fields)
        ),
        rate_field=declared.string("rate_field"),
        cap=None if cap_table is None else _parse_cap(cap_table),
    )


def field_path(name: str) -> tuple[str, ...]:
    """A field name, dotted for nested objects: "http.status"."""
    return tuple(name.split("."))


def _parse_rules(table: Table) -> list[SampleRule]:
    rules: list[SampleRule] = []
    for index, entry in enumerate(table.array_of_tables("rules")):
        item = entry.data
        entry.check_keys(_RULE_KEYS)
        name = entry.string("name", f"rule{index + 1}")
        if not COUNTER_NAME_RE.fullmatch(name):
            entry.problem("name", f"must match ^{COUNTER_NAME_RE.pattern}$ (it names a counter)")
        elif any(rule.name == name for rule in rules):
            entry.problem("name", f'another rule is already named "{name}"')
        if "rate" not in item:
            entry.problem("rate", "required")
        rate = entry.fraction("rate", 1.0)
        match = entry.table("match", required=True)
        conditions = [] if match is None else _parse_conditions(match)
        key_field = entry.optional_string("key_field")
        rules.append(
            SampleRule(
                name=name,
                rate=rate,
                conditions=tuple(conditions),
                key_field=None if key_field is None else field_path(key_field),
            )
        )
    return rules


def _parse_conditions(table: Table) -> list[FieldCondition]:
    """``field = value``, ``field = [values]`` or ``field = { regex = "..." }``."""
    if not table.data:
        table.problems.append(ConfigProblem(table.path, "needs at least one field condition"))
    conditions: list[FieldCondition] = []
    for name, value in table.data.items():
        if isinstance(value, Mapping):
            sub = Table(value, join_path(table.path, name), table.problems)
            sub.check_keys(("regex",))
            regex = compile_linear_pattern(sub, "regex", sub.optional_string("regex"))
            if "regex" not in value:
                sub.problem("regex", "required")
            if regex is not None:
                conditions.append(FieldCondition(field_path(name), regex=regex))
            continue
        values = value if isinstance(value, list) else [value]
        good = [v for v in values if isinstance(v, str | int | float)]
        if not values or len(good) != len(values):
            table.problem(
                name,
                'expected a string, number or boolean, an array of them, or { regex = "..." }',
            )
            continue
        conditions.append(FieldCondition(field_path(name), values=tuple(good)))
    return conditions


def _parse_cap(table: Table | None) -> CapLimit | None:
    if table is None:
        return None
    table.check_keys(_CAP_KEYS)
    if "max_per_sec" not in table.data:
        table.problem("max_per_sec", "required")
    return CapLimit(
        key_field=field_path(table.string("key_field", "message")),
        max_per_sec=table.integer("max_per_sec", 100, 1, 10_000_000),
        summary_interval_secs=table.seconds("summary_interval_secs", 60.0, most=86400),
    )
