"""Where batches go: S3-compatible storage, or a local directory laid out like a bucket."""

from __future__ import annotations

__all__ = ["ObjectToPut", "PutOutcome", "Sink", "build_sink"]

from shipper.config import SinkSettings
from shipper.sinks.base import ObjectToPut, PutOutcome, Sink


def build_sink(settings: SinkSettings) -> Sink:
    if settings.type == "directory":
        from shipper.sinks.directory import DirectorySink

        assert settings.path is not None
        return DirectorySink(settings.path)
    from shipper.sinks.s3 import S3Sink  # boto3 loads only when it is used

    assert settings.bucket is not None
    return S3Sink(
        bucket=settings.bucket,
        endpoint_url=settings.endpoint_url,
        region=settings.region,
        storage_class=settings.storage_class,
    )
