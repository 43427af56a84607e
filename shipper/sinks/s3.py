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

from shipper.errors import SinkError
from shipper.sinks.base import ObjectToPut, PutOutcome

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

#: Error codes that are worth retrying even though their status is a 4xx.
_RETRIABLE_CODES = frozenset(
    {
        "SlowDown",
        "RequestTimeout",
        "RequestTimeTooSkewed",
        "ExpiredToken",
        "TokenRefreshRequired",
        "AccessDenied",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "NoSuchBucket",
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
            raise SinkError(f"s3://{self.bucket}/{obj.key}: {exc}", retriable=True) from exc
        return PutOutcome.STORED

    def close(self) -> None:
        self.client.close()


def _classify(exc: ClientError, key: str) -> PutOutcome:
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
    code = str(exc.response.get("Error", {}).get("Code", ""))
    if status == 412 or code == "PreconditionFailed":
        return PutOutcome.ALREADY_PRESENT
    retriable = status >= 500 or status in (403, 404, 408, 429) or code in _RETRIABLE_CODES
    raise SinkError(f"{key}: HTTP {status} {code}: {exc}", retriable=retriable) from exc
