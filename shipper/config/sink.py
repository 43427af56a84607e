"""``[sink]``: the store, its object keys, compression and S3 options."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from types import MappingProxyType
from typing import Any, cast, get_args
from urllib.parse import urlsplit

from shipper.batch.objectkey import KeyTemplateError, compile_template
from shipper.config.model import (
    DEFAULT_COMPRESSION_LEVEL,
    ChecksumAlgorithm,
    Codec,
    ObjectLockMode,
    ServerSideEncryption,
    SinkSettings,
    SinkType,
    allowed_keys,
)
from shipper.config.reader import Declared, Table, resolve_path, toml_type_name

_SINK_KEYS = allowed_keys(SinkSettings)
_BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9.-]*[a-z0-9]")


def parse_sink(table: Table | None, base_dir: Path) -> SinkSettings | None:
    if table is None:
        return None
    table.check_keys(_SINK_KEYS)
    declared = Declared(table, SinkSettings)
    sink_type = table.choice("type", get_args(SinkType), None)
    path = table.optional_string("path")
    bucket = table.optional_string("bucket")
    for needed, required_by in (("path", "directory"), ("bucket", "s3")):
        if sink_type == required_by and needed not in table.data:
            table.problem(needed, f'required when sink.type = "{required_by}"')
    if bucket is not None:
        shown = table.shown("bucket", bucket)
        if table.expanded_from("bucket"):
            shown = f"({shown})"
        if reason := _bucket_problem(bucket, shown):
            table.problem("bucket", reason)
    prefix = declared.string("prefix").strip("/")
    if "//" in prefix or ".." in prefix.split("/"):
        shown = table.shown("prefix", prefix)
        table.problem("prefix", f'must not contain "//" or ".." segments, got {shown}')
    endpoint_url = table.optional_string("endpoint_url")
    if endpoint_url is not None and (
        reason := _endpoint_problem(endpoint_url, table.shown("endpoint_url", endpoint_url))
    ):
        table.problem("endpoint_url", reason)
    codec = cast(Codec, declared.choice("codec", get_args(Codec)))
    key_fields = _string_table(table, "key_fields")
    key_template = declared.string("key_template")
    try:
        compile_template(key_template, prefix=prefix, static=key_fields, codec=codec)
    except KeyTemplateError as exc:
        table.problem("key_template", str(exc))
    store = _parse_store_options(table, s3=(sink_type or "directory") == "s3")
    return SinkSettings(
        type=cast(SinkType, sink_type or "directory"),
        path=None if path is None else resolve_path(base_dir, path),
        bucket=bucket,
        prefix=prefix,
        endpoint_url=endpoint_url,
        region=table.optional_string("region"),
        codec=codec,
        compression_level=table.integer(
            "compression_level", DEFAULT_COMPRESSION_LEVEL[codec], 1, 22 if codec == "zstd" else 9
        ),
        upload_concurrency=declared.integer("upload_concurrency"),
        key_template=key_template,
        key_fields=MappingProxyType(key_fields),
        **store,
    )


#: Settings that only an S3 store understands.
_S3_ONLY = (
    "storage_class",
    "server_side_encryption",
    "kms_key_id",
    "tags",
    "object_lock_mode",
    "object_lock_retain_days",
    "multipart_threshold",
    "multipart_part_size",
)


def _parse_store_options(table: Table, *, s3: bool) -> dict[str, Any]:
    """Storage class, encryption, tags, Object Lock, checksums and multipart sizes."""
    if not s3:
        for name in _S3_ONLY:
            if name in table.data:
                table.problem(name, 'only applies to sink.type = "s3"')
    sse = table.optional_choice("server_side_encryption", get_args(ServerSideEncryption))
    kms_key_id = table.optional_string("kms_key_id")
    if kms_key_id is not None and sse != "aws:kms":
        table.problem("kms_key_id", 'needs server_side_encryption = "aws:kms"')
    lock_mode = table.optional_choice("object_lock_mode", get_args(ObjectLockMode))
    declared = Declared(table, SinkSettings)
    retain_days = declared.optional_integer("object_lock_retain_days")
    if (lock_mode is None) != (retain_days is None):
        table.problem(
            "object_lock_mode" if lock_mode is None else "object_lock_retain_days",
            "object_lock_mode and object_lock_retain_days go together",
        )
    tags = _string_table(table, "tags")
    if len(tags) > 10:
        table.problem("tags", f"at most 10 tags (an S3 limit), got {len(tags)}")
    for name, value in tags.items():
        if len(name) > 128 or len(value) > 256:
            table.problem(f"tags.{name}", "keys are at most 128 characters, values 256")
    part_size = declared.size("multipart_part_size")
    return {
        "storage_class": table.optional_string("storage_class"),
        "multipart_threshold": declared.size("multipart_threshold"),
        "multipart_part_size": part_size,
        "checksum_algorithm": declared.choice("checksum_algorithm", get_args(ChecksumAlgorithm)),
        "server_side_encryption": sse,
        "kms_key_id": kms_key_id,
        "tags": MappingProxyType(tags),
        "object_lock_mode": lock_mode,
        "object_lock_retain_days": retain_days,
    }


def _string_table(table: Table, name: str) -> dict[str, str]:
    """A table of string values (``tags``, ``key_fields``); others are reported."""
    sub = table.table(name)
    if sub is None:
        return {}
    values: dict[str, str] = {}
    for key, value in sub.data.items():
        if not isinstance(value, str):
            sub.problem(key, f"expected a string, got {toml_type_name(value)}")
        else:
            values[key] = value
    return values


def _bucket_problem(bucket: str, shown: str) -> str | None:
    """S3 naming rules, checked early so a typo fails at startup rather than at first upload.

    ``shown`` is how the message quotes the name (see ``Table.shown``).
    """
    if not 3 <= len(bucket) <= 63 or not _BUCKET_RE.fullmatch(bucket):
        return (
            f"invalid bucket name {shown}: use 3-63 lowercase letters, digits, dots and "
            "hyphens, starting and ending with a letter or digit"
        )
    if ".." in bucket:
        return f'invalid bucket name {shown}: must not contain ".."'
    try:
        ipaddress.IPv4Address(bucket)
    except ValueError:
        return None
    return f"invalid bucket name {shown}: must not look like an IP address"


#: Where the S3 sink's credentials come from instead of the config (as the README says).
_CREDENTIALS_HINT = (
    "credentials come from boto3's default chain: the environment variables"
    " AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, a profile (AWS_PROFILE), or an"
    " instance or pod role"
)


def _endpoint_problem(url: str, shown: str) -> str | None:
    """Where requests go, and only that: the URL is printed in errors and logged by
    libraries, so it must carry no credentials, and no query string (a presigned one
    holds a signature). Neither is ever quoted back."""
    # Any "@" counts: a password may hold an unescaped "/", "?" or "#" before it.
    if "@" in url:
        return f"must not contain credentials (user:password@); {_CREDENTIALS_HINT}"
    if "?" in url or "#" in url:
        return "must not contain a query string or fragment: it says where the store is, no more"
    if not _is_http_url(url):
        return f"must be an http:// or https:// URL with a host, got {shown}"
    return None


def _is_http_url(url: str) -> bool:
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError on a non-numeric or out-of-range port
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)
