"""The config file: one module per TOML area, the settings they make, and the loader.

``model`` declares every setting with its default and bounds; ``reader`` reads a
table and collects problems; ``load`` reads the file and calls each area.
"""

from __future__ import annotations

from shipper.config.load import (
    CONFIG_ENV_VAR,
    DEFAULT_CONFIG_PATH,
    find_config_path,
    load_config,
    parse_config,
)
from shipper.config.model import (
    DEFAULT_COMPRESSION_LEVEL,
    BatchSettings,
    DiskSettings,
    EnrichSettings,
    HealthSettings,
    MultilineSettings,
    ParseSettings,
    ReadFrom,
    RedactSettings,
    RetentionSettings,
    SampleSettings,
    Settings,
    SinkSettings,
    SinkType,
    SourceSettings,
    SpoolSettings,
)

__all__ = [
    "CONFIG_ENV_VAR",
    "DEFAULT_COMPRESSION_LEVEL",
    "DEFAULT_CONFIG_PATH",
    "BatchSettings",
    "DiskSettings",
    "EnrichSettings",
    "HealthSettings",
    "MultilineSettings",
    "ParseSettings",
    "ReadFrom",
    "RedactSettings",
    "RetentionSettings",
    "SampleSettings",
    "Settings",
    "SinkSettings",
    "SinkType",
    "SourceSettings",
    "SpoolSettings",
    "find_config_path",
    "load_config",
    "parse_config",
]
