"""Where batches go: S3-compatible storage, or a local directory laid out like a bucket."""

from __future__ import annotations

__all__ = ["ObjectToPut", "PutOutcome", "Sink", "build_sink"]

from shipper.config import SinkSettings
from shipper.deliver.sinks.base import ObjectToPut, PutOutcome, Sink


def build_sink(settings: SinkSettings) -> Sink:
    if settings.type == "directory":
        from shipper.deliver.sinks.directory import DirectorySink

        assert settings.path is not None
        return DirectorySink(settings.path)
    from shipper.deliver.sinks.s3 import S3Sink  # boto3 loads only when it is used

    return S3Sink(settings)
