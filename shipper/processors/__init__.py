"""Record processing: parse, sample, enrich, redact (see :mod:`shipper.processors.chain`).

The chain is built from settings by :func:`shipper.processors.build.build_chain`;
this package imports nothing itself, so the config can use its detectors and rules.
"""
