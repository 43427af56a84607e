"""Builds the record chain the settings describe."""

from __future__ import annotations

__all__ = ["build_chain"]

from collections import Counter
from collections.abc import Mapping

from shipper.config import EnrichSettings, ParseSettings, RedactSettings, SampleSettings
from shipper.transform.chain import Chain
from shipper.transform.enrich import Enrich, kubernetes_fields
from shipper.transform.redact.detectors import BUILTIN_DETECTORS
from shipper.transform.redact.redactor import Redactor
from shipper.transform.sample import Sampler


def build_chain(
    *,
    host: str,
    environ: Mapping[str, str],
    parse: ParseSettings | None = None,
    enrich: EnrichSettings | None = None,
    redact: RedactSettings | None = None,
    sample: SampleSettings | None = None,
) -> Chain:
    """The chain the settings describe; settings left out take their defaults."""
    parse = parse or ParseSettings()
    enrich = enrich or EnrichSettings()
    redact = redact or RedactSettings()
    sample = sample or SampleSettings()
    counters: Counter[str] = Counter()
    static: dict[str, object] = {"host": host} if enrich.host else {}
    static.update(enrich.fields)
    pod = kubernetes_fields(environ) if enrich.kubernetes else {}
    if pod:
        static["kubernetes"] = pod
    enricher = Enrich(
        static,
        collision_prefix=enrich.collision_prefix,
        counters=counters,
        source_path_field="file_path" if enrich.file_path else None,
        source_offset_field="file_offset" if enrich.file_offset else None,
    )
    redactor = None
    if redact.enabled:
        redactor = Redactor(
            keys=redact.keys,
            detectors=[
                (d, redact.detectors[d.name])
                for d in BUILTIN_DETECTORS
                if d.name in redact.detectors
            ],
            custom=redact.custom,
            counters=counters,
            hash_key=redact.hash_key,
        )
    sampler = None
    if sample.rules or sample.cap is not None:
        sampler = Sampler(
            rules=sample.rules,
            counters=counters,
            key_field=sample.key_field,
            keep_level=sample.keep_level,
            level_fields=sample.level_fields,
            rate_field=sample.rate_field,
            cap=sample.cap,
        )
    return Chain(
        flags_field=enrich.collision_prefix + "flags",
        counters=counters,
        enrich=enricher,
        redactor=redactor,
        sampler=sampler,
        timestamp_fields=parse.timestamp_fields,
    )
