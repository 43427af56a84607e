"""S3-compatible object storage through boto3 (AWS S3, MinIO, SeaweedFS, ...).

Every put sends ``If-None-Match: *``: a 412 means this exact batch is already
stored, which counts as delivered. Credentials come from boto3's default chain,
never from the config file.
"""

from __future__ import annotations

__all__ = ["S3Sink"]

import base64
import hashlib
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from shipper.errors import FailureKind, SinkError
from shipper.sinks.base import ObjectToPut, PutOutcome

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

# Error codes S3-compatible stores return, by how the write is handled (see
# ``failure_kind``).
_RETRIABLE_CODES = frozenset(
    {
        "SlowDown",
        "RequestTimeout",
        "InternalError",
        "ServiceUnavailable",
        "OperationAborted",
        # The body was damaged on the way (our spool copy is checksummed): send it again.
        "BadDigest",
        "InvalidDigest",
        "XAmzContentSHA256Mismatch",
        "IncompleteBody",
    }
)
_PERMANENT_CODES = frozenset(
    {
        "EntityTooLarge",
        "InvalidArgument",
        "InvalidEncryptionAlgorithmError",
        "InvalidObjectName",
        "InvalidObjectState",
        "InvalidRequest",
        "InvalidStorageClass",
        "InvalidTag",
        "InvalidURI",
        "KeyTooLongError",
        "MalformedXML",
        "MetadataTooLarge",
        "MissingContentLength",
    }
)


class S3Sink:
    def __init__(
        self,
        *,
        bucket: str,
        endpoint_url: str | None,
        region: str | None,
        storage_class: str | None = None,
    ) -> None:
        self.bucket = bucket
        self.storage_class = storage_class
        config = Config(
            # Our uploader retries forever with backoff; botocore's own retries would
            # hide the errors from it.
            retries={"total_max_attempts": 1},
            connect_timeout=10,
            read_timeout=60,
            s3={"addressing_style": "path" if endpoint_url else "auto"},
            request_checksum_calculation="when_supported",
        )
        self.client: S3Client = boto3.session.Session().client(
            "s3", endpoint_url=endpoint_url, region_name=region, config=config
        )

    def put(self, obj: ObjectToPut) -> PutOutcome:
        extra: dict[str, Any] = {}
        if self.storage_class:
            extra["StorageClass"] = self.storage_class
        try:
            self.client.put_object(
                Bucket=self.bucket,
                Key=obj.key,
                Body=obj.body,
                IfNoneMatch="*",
                ContentType=obj.content_type,
                ContentEncoding=obj.content_encoding,
                ContentMD5=base64.b64encode(hashlib.md5(obj.body).digest()).decode(),
                ChecksumAlgorithm="CRC32",
                Metadata=dict(obj.metadata),
                **extra,
            )
        except ClientError as exc:
            return _classify(exc, obj.key)
        except BotoCoreError as exc:
            # Connection refused or reset, timeouts, DNS: the store may come back.
            raise SinkError(f"s3://{self.bucket}/{obj.key}: {exc}") from exc
        return PutOutcome.STORED

    def close(self) -> None:
        self.client.close()


def _classify(exc: ClientError, key: str) -> PutOutcome:
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
    code = str(exc.response.get("Error", {}).get("Code", ""))
    if status == 412 or code == "PreconditionFailed":
        return PutOutcome.ALREADY_PRESENT
    raise SinkError(f"{key}: HTTP {status} {code}: {exc}", kind=failure_kind(status, code)) from exc


def failure_kind(status: int, code: str) -> FailureKind:
    """How a store's error response is handled (see :data:`FailureKind`).

    Only errors known to concern the request itself are permanent. Every other
    refusal is ``access``: credentials and permissions (AccessDenied,
    ExpiredToken, SignatureDoesNotMatch, RequestTimeTooSkewed), a missing bucket,
    or a 404 or 405 from something that is not an S3 endpoint; a problem to fix
    outside, never a reason to set data aside.
    """
    if code in _RETRIABLE_CODES or status >= 500 or status in (0, 408, 429):
        return "retriable"
    if code in _PERMANENT_CODES or status == 413:
        return "permanent"
    return "access"
