"""Adds ``host``, the static ``enrich.fields``, Kubernetes and source fields.

The application's fields always win: on a collision ours goes under
``collision_prefix`` and the collision is counted, so nothing is clobbered.
"""

from __future__ import annotations

__all__ = ["KUBERNETES_ENV", "Enrich", "kubernetes_fields"]

from collections import Counter
from collections.abc import Mapping
from typing import Any

#: The downward-API variables a pod spec usually sets, and the names they get
#: under the record's ``kubernetes`` object.
KUBERNETES_ENV = (
    ("POD_NAME", "pod_name"),
    ("POD_NAMESPACE", "pod_namespace"),
    ("NODE_NAME", "node_name"),
    ("POD_IP", "pod_ip"),
    ("CONTAINER_NAME", "container_name"),
)


def kubernetes_fields(environ: Mapping[str, str]) -> dict[str, str]:
    """The downward-API values that are set (and not empty)."""
    return {name: environ[var] for var, name in KUBERNETES_ENV if environ.get(var)}


class Enrich:
    def __init__(
        self,
        fields: Mapping[str, Any],
        *,
        collision_prefix: str,
        counters: Counter[str],
        source_path_field: str | None = None,
        source_offset_field: str | None = None,
    ) -> None:
        self.fields = tuple(fields.items())
        self.collision_prefix = collision_prefix
        self.counters = counters
        self.source_path_field = source_path_field
        self.source_offset_field = source_offset_field
        self._static = dict(self.fields)
        added = [name for name, _ in self.fields]
        added += [n for n in (source_path_field, source_offset_field) if n is not None]
        #: Every name this adds, when each is added once (else None: a name given
        #: twice collides with ourselves, which only the long way counts).
        self._names: tuple[str, ...] | None = (
            tuple(added) if len(set(added)) == len(added) else None
        )

    def added_all(self, record: dict[str, Any], path: str, offset: int) -> bool:
        """``self(record)`` and ``add_source`` at once, when no name collides; False
        (the record untouched) when one does, for the caller to take the long way.

        The values are not copied: the caller encodes the record before anything
        could change them.
        """
        names = self._names
        if names is None:
            return False
        for name in names:
            if name in record:
                return False
        record.update(self._static)
        if self.source_path_field is not None:
            record[self.source_path_field] = path
        if self.source_offset_field is not None:
            record[self.source_offset_field] = offset
        return True

    def __call__(self, record: dict[str, Any]) -> dict[str, Any]:
        for name, value in self.fields:
            self._set(record, name, value)
        return record

    def added_names_and_values(self) -> list[Any]:
        """Everything this adds to every record but paths and offsets: the names (also
        under the collision prefix) and the static values, for the redactor to vet."""
        names = [name for name, _ in self.fields]
        names += [n for n in (self.source_path_field, self.source_offset_field) if n is not None]
        values = [value for _, value in self.fields]
        return [*names, *(self.collision_prefix + name for name in names), *values]

    def add_source(self, record: dict[str, Any], path: str, offset: int) -> None:
        """The file a record was read from and the byte offset its line starts at."""
        if self.source_path_field is not None:
            self._set(record, self.source_path_field, path)
        if self.source_offset_field is not None:
            self._set(record, self.source_offset_field, offset)

    def _set(self, record: dict[str, Any], name: str, value: Any) -> None:
        # Copied, so that a later processor changing one record's value (a nested
        # object such as ``kubernetes``) cannot change every other record's.
        value = dict(value) if isinstance(value, dict) else value
        if name not in record:
            record[name] = value
            return
        self.counters["enrich_collision"] += 1
        prefixed = self.collision_prefix + name
        if prefixed in record:
            # The application uses our prefixed name too: its value stays, ours is
            # left out (and counted) rather than overwrite it.
            self.counters["enrich_dropped"] += 1
        else:
            record[prefixed] = value
