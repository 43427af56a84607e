"""``[parse]`` and ``[enrich]``: where a record's time is, and the fields added to it."""

from __future__ import annotations

import math
from types import MappingProxyType

from shipper.config.model import EnrichSettings, FieldValue, ParseSettings, allowed_keys
from shipper.config.reader import Declared, Table, toml_type_name

_PARSE_KEYS = ("timestamp_field",)
_ENRICH_KEYS = allowed_keys(EnrichSettings)


def parse_parse(table: Table | None) -> ParseSettings:
    if table is None:
        return ParseSettings()
    table.check_keys(_PARSE_KEYS)
    name = table.optional_string("timestamp_field")
    return ParseSettings() if name is None else ParseSettings(timestamp_fields=(name,))


def parse_enrich(table: Table | None) -> EnrichSettings:
    if table is None:
        return EnrichSettings()
    table.check_keys(_ENRICH_KEYS)
    fields_table = table.table("fields")
    fields = {} if fields_table is None else _parse_fields(fields_table)
    declared = Declared(table, EnrichSettings)
    return EnrichSettings(
        fields=MappingProxyType(fields),
        host=declared.boolean("host"),
        collision_prefix=declared.string("collision_prefix"),
        kubernetes=declared.boolean("kubernetes"),
        file_path=declared.boolean("file_path"),
        file_offset=declared.boolean("file_offset"),
    )


def _parse_fields(table: Table) -> dict[str, FieldValue]:
    """Fields end up in JSON records, so only JSON scalars (finite numbers) are allowed."""
    fields: dict[str, FieldValue] = {}
    for name, value in table.data.items():
        if not name:
            table.problem(name, "field name must not be empty")
        elif not isinstance(value, str | int | float):
            table.problem(
                name, f"expected a string, number or boolean, got {toml_type_name(value)}"
            )
        elif isinstance(value, float) and not math.isfinite(value):
            table.problem(name, f"must be a finite number, got {value!r}")
        else:
            fields[name] = value
    return fields
