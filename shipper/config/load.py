"""Turns the TOML config file into frozen, validated settings."""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from shipper.errors import ConfigError, ConfigProblem

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

from shipper.config.batch import parse_batch, parse_spool
from shipper.config.enrich import parse_enrich, parse_parse
from shipper.config.health import parse_health
from shipper.config.housekeeping import parse_disk, parse_retention
from shipper.config.model import Settings, allowed_keys
from shipper.config.reader import Declared, Problems, Table, interpolate, resolve_path
from shipper.config.redact import parse_redact
from shipper.config.sample import parse_sample
from shipper.config.sink import parse_sink
from shipper.config.sources import parse_sources

DEFAULT_CONFIG_PATH = Path("/etc/shipper/config.toml")
CONFIG_ENV_VAR = "SHIPPER_CONFIG"


_ROOT_KEYS = allowed_keys(Settings, "config_path", "expanded_values")


def find_config_path(cli_value: str | None, environ: Mapping[str, str]) -> Path:
    """Pick the config file: ``-c`` beats ``$SHIPPER_CONFIG`` beats the packaged default.

    Empty values count as unset, so ``SHIPPER_CONFIG=`` does not point at the current directory.
    """
    if cli_value:
        return Path(cli_value)
    from_env = environ.get(CONFIG_ENV_VAR)
    return Path(from_env) if from_env else DEFAULT_CONFIG_PATH


def load_config(path: Path, environ: Mapping[str, str] | None = None) -> Settings:
    """Read, interpolate and validate the file at ``path``; raise ConfigError on any problem."""
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ConfigError(
            [ConfigProblem("", f"{path}: cannot read config file: {reason}")]
        ) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([ConfigProblem("", f"{path}: invalid TOML: {exc}")]) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError([ConfigProblem("", f"{path}: not valid UTF-8: {exc}")]) from exc
    env = os.environ if environ is None else environ
    settings = parse_config(data, base_dir=path.absolute().parent, environ=env)
    return dataclasses.replace(settings, config_path=path)


def parse_config(
    data: Mapping[str, Any], *, base_dir: Path, environ: Mapping[str, str]
) -> Settings:
    """Validate already-parsed TOML; pure, so tests need no files.

    No problem's message holds a value expanded from the environment: a value that
    ``${VAR}`` made is described by its variable instead (``got a value from ${VAR}``).
    """
    problems = Problems()
    root = Table(interpolate(data, "", environ, problems), "", problems)
    root.check_keys(_ROOT_KEYS)
    declared = Declared(root, Settings)
    state_dir = resolve_path(base_dir, root.string("state_dir", str(declared.default("state_dir"))))
    sources = parse_sources(root, base_dir)
    parse = parse_parse(root.table("parse"))
    enrich = parse_enrich(root.table("enrich"))
    redact = parse_redact(root.table("redact"), environ)
    sample = parse_sample(root.table("sample"))
    batch = parse_batch(root.table("batch"))
    spool = parse_spool(root.table("spool"), batch)
    sink = parse_sink(root.table("sink", required=True), base_dir)
    health = parse_health(root.table("health"))
    retention = parse_retention(root.table("retention"))
    disk = parse_disk(root.table("disk"))
    poll_interval = declared.seconds("poll_interval_secs")
    shutdown_timeout = declared.seconds("shutdown_timeout_secs")
    file_events = declared.boolean("file_events")
    checkpoint_grace = declared.seconds("checkpoint_grace_secs")
    max_open_files = declared.integer("max_open_files")
    close_inactive = declared.seconds("close_inactive_secs")
    if problems or sink is None:
        raise ConfigError(problems.without_expanded_values())
    return Settings(
        state_dir=state_dir,
        sources=MappingProxyType(sources),
        parse=parse,
        enrich=enrich,
        redact=redact,
        sample=sample,
        batch=batch,
        spool=spool,
        sink=sink,
        health=health,
        retention=retention,
        disk=disk,
        poll_interval_secs=poll_interval,
        file_events=file_events,
        shutdown_timeout_secs=shutdown_timeout,
        checkpoint_grace_secs=checkpoint_grace,
        max_open_files=max_open_files,
        close_inactive_secs=close_inactive,
        expanded_values=MappingProxyType(dict(problems.expanded_values)),
    )
