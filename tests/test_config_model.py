"""Each setting's default and bounds are declared once, in ``config.model``, and the
reader enforces exactly those: one step past a bound is refused at the key's path,
the bound itself is accepted, and an absent key reads as the declared default."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from shipper.config import (
    BatchSettings,
    DiskSettings,
    MultilineSettings,
    RetentionSettings,
    Settings,
    SinkSettings,
    SourceSettings,
    SpoolSettings,
    parse_config,
)
from shipper.config.model import Bounds, bounds_of, default_of
from shipper.errors import ConfigError

#: Where each settings class sits in a config file, and a minimal config around it.
AREAS: dict[type, tuple[str, ...]] = {
    Settings: (),
    SourceSettings: ("sources", "app"),
    MultilineSettings: ("sources", "app", "multiline"),
    BatchSettings: ("batch",),
    SpoolSettings: ("spool",),
    SinkSettings: ("sink",),
    RetentionSettings: ("retention",),
    DiskSettings: ("disk",),
}
#: Keys whose bounds need another key set to be reached alone.
COMPANIONS: dict[str, dict[tuple[str, ...], Any]] = {
    "object_lock_retain_days": {("sink", "object_lock_mode"): "GOVERNANCE"},
    # The spool must hold one batch of the largest size allowed.
    "max_bytes": {("spool", "max_bytes"): 2**40},
}
#: A lower bound that a rule across keys raises: the spool holds at least one batch.
RAISED_BY_ANOTHER_KEY = {(SpoolSettings, "max_bytes")}


def minimal() -> dict[str, Any]:
    return {
        "sources": {"app": {"include": ["/var/log/app/*.log"]}},
        "sink": {"type": "s3", "bucket": "logs"},
    }


def bounded_fields() -> list[tuple[type, str, Bounds]]:
    found = []
    for model in AREAS:
        for declared in dataclasses.fields(model):
            bounds = bounds_of(model, declared.name)
            if bounds != Bounds():
                found.append((model, declared.name, bounds))
    return found


def with_value(model: type, name: str, value: object) -> dict[str, Any]:
    data = copy.deepcopy(minimal())
    table = data
    for part in AREAS[model]:
        table = table.setdefault(part, {})
    for (*parents, key), companion in COMPANIONS.get(name, {}).items():
        holder = data
        for part in parents:
            holder = holder.setdefault(part, {})
        holder.setdefault(key, companion)
    table[name] = value
    return data


def problems(data: dict[str, Any]) -> list[str]:
    try:
        parse_config(data, base_dir=Path("/etc/shipper"), environ={})
    except ConfigError as exc:
        return [str(p) for p in exc.problems]
    return []


def key_path(model: type, name: str) -> str:
    return ".".join((*AREAS[model], name))


@pytest.mark.parametrize(("model", "name", "bounds"), bounded_fields())
def test_each_declared_bound_is_what_the_reader_enforces(
    model: type, name: str, bounds: Bounds
) -> None:
    whole = isinstance(default_of(model, name), int) or bounds.at_least is not None
    if bounds.at_least is not None:
        if (model, name) not in RAISED_BY_ANOTHER_KEY:
            assert problems(with_value(model, name, bounds.at_least)) == []
        refused = problems(with_value(model, name, bounds.at_least - 1))
        assert [p for p in refused if p.startswith(key_path(model, name) + ":")], refused
    if bounds.at_most is not None:
        most = int(bounds.at_most) if whole else bounds.at_most
        assert problems(with_value(model, name, most)) == []
        refused = problems(with_value(model, name, most + 1))
        assert [p for p in refused if p.startswith(key_path(model, name) + ":")], refused
    if bounds.allow_zero:
        assert problems(with_value(model, name, 0)) == []


def test_the_bounds_table_is_not_empty() -> None:
    # A refactoring that lost the declarations would make the test above vacuous.
    assert len(bounded_fields()) >= 15


def test_an_absent_key_reads_as_the_declared_default() -> None:
    settings = parse_config(minimal(), base_dir=Path("/etc/shipper"), environ={})
    for model, path in AREAS.items():
        value: Any = settings
        for part in path:
            value = value[part] if isinstance(value, Mapping) else getattr(value, part)
        for declared in dataclasses.fields(model):
            try:
                default = default_of(model, declared.name)
            except KeyError:
                continue  # required
            if declared.name in ("config_path", "expanded_values", "bucket"):
                continue
            assert getattr(value, declared.name) == default, (model.__name__, declared.name)
