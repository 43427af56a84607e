"""S3-compatible object storage through boto3 (AWS S3, MinIO, SeaweedFS, ...).

Every put sends ``If-None-Match: *``: a 412 means this exact batch is already
stored, which counts as delivered. Credentials come from boto3's default chain,
never from the config file.
"""

from __future__ import annotations

__all__ = ["S3Sink"]

import base64
import contextlib
import hashlib
import urllib.parse
import zlib
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from shipper.config import SinkSettings
from shipper.deliver.sinks.base import ObjectToPut, PutOutcome
from shipper.errors import FailureKind, SinkError
from shipper.redact_output import hide_url_secrets

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
        # Another request on the same key was in flight (a complete racing an abort).
        "ConditionalRequestConflict",
        # A multipart upload aborted under us (by a lifecycle rule): start it again.
        "NoSuchUpload",
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
    def __init__(self, settings: SinkSettings) -> None:
        assert settings.bucket is not None
        self.bucket = settings.bucket
        self.checksum_algorithm = settings.checksum_algorithm
        self.multipart_threshold = settings.multipart_threshold
        self.part_size = settings.multipart_part_size
        self.lock_days = settings.object_lock_retain_days
        #: Arguments every object's first request carries (put, or create multipart).
        self.object_args = _object_args(settings)
        config = Config(
            # Our uploader retries forever with backoff; botocore's own retries would
            # hide the errors from it.
            retries={"total_max_attempts": 1},
            connect_timeout=10,
            read_timeout=60,
            s3={"addressing_style": "path" if settings.endpoint_url else "auto"},
            request_checksum_calculation="when_supported",
        )
        self.client: S3Client = boto3.session.Session().client(
            "s3", endpoint_url=settings.endpoint_url, region_name=settings.region, config=config
        )

    def put(self, obj: ObjectToPut) -> PutOutcome:
        try:
            if len(obj.body) > self.multipart_threshold:
                return self._put_multipart(obj)
            self.client.put_object(
                Bucket=self.bucket,
                Key=obj.key,
                Body=obj.body,
                IfNoneMatch="*",
                ContentMD5=_md5(obj.body),
                ChecksumAlgorithm=self.checksum_algorithm,
                **self._args_for(obj),
            )
        except ClientError as exc:
            return _classify(exc, obj.key)
        except BotoCoreError as exc:
            # Connection refused or reset, timeouts, DNS: the store may come back. The
            # text names the request's URL, whose query string (a multipart upload id,
            # a presigned signature) and userinfo stay out of our messages.
            raise SinkError(hide_url_secrets(f"s3://{self.bucket}/{obj.key}: {exc}")) from exc
        return PutOutcome.STORED

    def _args_for(self, obj: ObjectToPut) -> dict[str, Any]:
        args = {
            **self.object_args,
            "ContentType": obj.content_type,
            "ContentEncoding": obj.content_encoding,
            "Metadata": dict(obj.metadata),
        }
        if self.lock_days is not None:
            # Counted from the upload: a retry after a crash is kept a little longer.
            args["ObjectLockRetainUntilDate"] = datetime.now(timezone.utc) + timedelta(
                days=self.lock_days
            )
        return args

    def _put_multipart(self, obj: ObjectToPut) -> PutOutcome:
        """Parts with their own checksums; completed with ``If-None-Match: *``.

        An upload a crash left behind for this key is aborted first, and a failed
        one is aborted at once, so parts are never leaked. A key already stored
        is found with a HEAD before any part is sent.
        """
        stored = self._exists(obj.key)
        self._abort_uploads_of(obj.key)
        if stored:
            return PutOutcome.ALREADY_PRESENT
        upload_id = self.client.create_multipart_upload(
            Bucket=self.bucket,
            Key=obj.key,
            ChecksumAlgorithm=self.checksum_algorithm,
            **self._args_for(obj),
        )["UploadId"]
        try:
            parts = []
            view = memoryview(obj.body)
            for number, offset in enumerate(range(0, len(view), self.part_size), start=1):
                piece = bytes(view[offset : offset + self.part_size])
                checksum = {
                    f"Checksum{self.checksum_algorithm}": _checksum(self.checksum_algorithm, piece)
                }
                answer = self.client.upload_part(
                    Bucket=self.bucket,
                    Key=obj.key,
                    UploadId=upload_id,
                    PartNumber=number,
                    Body=piece,
                    ContentMD5=_md5(piece),
                    **checksum,  # type: ignore[arg-type]
                )
                parts.append({"PartNumber": number, "ETag": answer["ETag"], **checksum})
            self.client.complete_multipart_upload(
                Bucket=self.bucket,
                Key=obj.key,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},  # type: ignore[typeddict-item]
                IfNoneMatch="*",
            )
        except (ClientError, BotoCoreError):
            with contextlib.suppress(ClientError, BotoCoreError):
                self.client.abort_multipart_upload(
                    Bucket=self.bucket, Key=obj.key, UploadId=upload_id
                )
            raise
        return PutOutcome.STORED

    def _exists(self, key: str) -> bool:
        """Whether ``key`` is stored. Only an optimisation (the complete's
        ``If-None-Match`` is the guard), so without read permission (403) it is
        taken as not stored."""
        try:
            self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") in (403, 404):
                return False
            raise
        return True

    def _abort_uploads_of(self, key: str) -> None:
        """Abort multipart uploads of exactly ``key`` (a crash's leftovers).

        Best effort: without ``s3:ListBucketMultipartUploads`` they are left to the
        bucket's lifecycle rule (``AbortIncompleteMultipartUpload``).
        """
        with contextlib.suppress(ClientError):
            listing = self.client.list_multipart_uploads(Bucket=self.bucket, Prefix=key)
            for upload in listing.get("Uploads", []):
                if upload.get("Key") == key and "UploadId" in upload:
                    self.client.abort_multipart_upload(
                        Bucket=self.bucket, Key=key, UploadId=upload["UploadId"]
                    )

    def close(self) -> None:
        self.client.close()


def _object_args(settings: SinkSettings) -> dict[str, Any]:
    args: dict[str, Any] = {}
    if settings.storage_class:
        args["StorageClass"] = settings.storage_class
    if settings.server_side_encryption:
        args["ServerSideEncryption"] = settings.server_side_encryption
    if settings.kms_key_id:
        args["SSEKMSKeyId"] = settings.kms_key_id
    if settings.tags:
        args["Tagging"] = urllib.parse.urlencode(dict(settings.tags))
    if settings.object_lock_mode:
        args["ObjectLockMode"] = settings.object_lock_mode
    return args


def _md5(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()


def _checksum(algorithm: str, data: bytes) -> str:
    if algorithm == "SHA256":
        return base64.b64encode(hashlib.sha256(data).digest()).decode()
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()


def _classify(exc: ClientError, key: str) -> PutOutcome:
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
    code = str(exc.response.get("Error", {}).get("Code", ""))
    if status == 412 or code == "PreconditionFailed":
        return PutOutcome.ALREADY_PRESENT
    raise SinkError(
        hide_url_secrets(f"{key}: HTTP {status} {code}: {exc}"), kind=failure_kind(status, code)
    ) from exc


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
