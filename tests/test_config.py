"""Config loading: every problem is reported at once, with a message an operator can act on."""

from __future__ import annotations

import copy
import dataclasses
import math
from pathlib import Path
from typing import Any

import pytest

from shipper.config import (
    CONFIG_ENV_VAR,
    DEFAULT_CONFIG_PATH,
    BatchSettings,
    EnrichSettings,
    HealthSettings,
    Settings,
    SpoolSettings,
    find_config_path,
    load_config,
    parse_config,
)
from shipper.errors import ConfigError
from shipper.units import KiB, MiB

BASE = Path("/etc/shipper")
DELETE = object()

FULL_CONFIG = """\
state_dir = "/var/lib/shipper"
[sources.app]
include = ["/var/log/app/*.log"]
exclude = []
read_from = "beginning"
[enrich]
fields = { service = "orchestrator" }
[batch]
max_bytes = "8MiB"
max_records = 100000
max_age_secs = 5
[sink]
type = "s3"
path = "./shipped"
bucket = "logs"
prefix = "app"
endpoint_url = "http://127.0.0.1:8333"
region = "us-east-1"
[health]
listen = "127.0.0.1:8686"
"""


def minimal() -> dict[str, Any]:
    return {
        "sources": {"app": {"include": ["/var/log/app/*.log"]}},
        "sink": {"type": "directory", "path": "/srv/shipped"},
    }


def config_with(changes: dict[str, Any]) -> dict[str, Any]:
    """A minimal config with dotted keys set (or removed with DELETE)."""
    data = copy.deepcopy(minimal())
    for dotted, value in changes.items():
        *parents, last = dotted.split(".")
        table = data
        for part in parents:
            table = table.setdefault(part, {})
        if value is DELETE:
            del table[last]
        else:
            table[last] = value
    return data


def parse(data: dict[str, Any], environ: dict[str, str] | None = None) -> Settings:
    return parse_config(data, base_dir=BASE, environ=environ or {})


def problems(data: dict[str, Any], environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as excinfo:
        parse(data, environ)
    return [str(p) for p in excinfo.value.problems]


BAD_CONFIGS: list[tuple[dict[str, Any], str]] = [
    ({"sink.type": "ftp"}, 'sink.type: must be one of "s3", "directory", got "ftp"'),
    ({"sink.type": "s3"}, 'sink.bucket: required when sink.type = "s3"'),
    ({"sink.path": DELETE}, 'sink.path: required when sink.type = "directory"'),
    ({"sink.type": DELETE}, "sink.type: required"),
    ({"sink": DELETE}, "sink: required"),
    ({"sink": "s3"}, "sink: expected a table, got string"),
    ({"sink.buckt": "logs"}, 'sink.buckt: unknown key (did you mean "bucket"?)'),
    ({"zzz": 1}, "zzz: unknown key"),
    ({"sources.app.inclde": ["x"]}, 'sources.app.inclde: unknown key (did you mean "include"?)'),
    ({"batch.max_records": "5"}, "batch.max_records: expected an integer, got string"),
    ({"batch.max_records": True}, "batch.max_records: expected an integer, got boolean"),
    ({"batch.max_records": 0}, "batch.max_records: must be at least 1, got 0"),
    ({"batch.max_bytes": "8XB"}, 'batch.max_bytes: invalid size "8XB": unknown unit "XB" '
     "(use B, KB, MB, GB, TB, KiB, MiB, GiB or TiB)"),
    ({"batch.max_bytes": "2GiB"}, "batch.max_bytes: must be between 1.0KiB and 1.0GiB, got 2.0GiB"),
    ({"batch.max_bytes": 1.5}, 'batch.max_bytes: expected a size (bytes, or a string like "8MiB"), '
     "got float"),
    ({"batch.max_age_secs": 0}, "batch.max_age_secs: must be greater than 0, got 0"),
    ({"batch.max_age_secs": 4000}, "batch.max_age_secs: must be at most 3600, got 4000"),
    ({"batch.max_age_secs": "5s"}, "batch.max_age_secs: expected a number of seconds, got string"),
    ({"batch.max_age_secs": math.nan}, "batch.max_age_secs: must be a finite number, got nan"),
    ({"poll_interval_secs": True}, "poll_interval_secs: expected a number of seconds, got boolean"),
    ({"shutdown_timeout_secs": -1}, "shutdown_timeout_secs: must be at least 0, got -1"),
    ({"spool.max_bytes": "1MiB"}, "spool.max_bytes: must be at least batch.max_bytes (8.0MiB)"),
    ({"sources": DELETE}, "sources: required"),
    ({"sources": {}}, "sources: must define at least one source, e.g. [sources.app]"),
    ({"sources.app": "x"}, "sources.app: expected a table, got string"),
    ({"sources.app.include": DELETE}, "sources.app.include: required"),
    ({"sources.app.include": []}, "sources.app.include: must not be empty"),
    ({"sources.app.include": "/var/log/*.log"},
     "sources.app.include: expected an array of strings, got string"),
    ({"sources.app.include": ["/a", 3]}, "sources.app.include[1]: expected a string, got integer"),
    ({"sources.app.exclude": [""]}, "sources.app.exclude[0]: must not be empty"),
    ({"sources.app.read_from": "middle"},
     'sources.app.read_from: must be one of "beginning", "end", got "middle"'),
    ({"sources.app.fingerprint_bytes": 8},
     "sources.app.fingerprint_bytes: must be between 16B and 64.0KiB, got 8B"),
    ({"sources.app.read_chunk_bytes": "1KiB"},
     "sources.app.read_chunk_bytes: must be between 4.0KiB and 64.0MiB, got 1.0KiB"),
    ({"sources.app.rotate_wait_secs": 0},
     "sources.app.rotate_wait_secs: must be greater than 0, got 0"),
    ({"sink.type": "s3", "sink.bucket": "Logs_Bucket"},
     'sink.bucket: invalid bucket name "Logs_Bucket": use 3-63 lowercase letters, digits, dots '
     "and hyphens, starting and ending with a letter or digit"),
    ({"sink.type": "s3", "sink.bucket": "ab"},
     'sink.bucket: invalid bucket name "ab": use 3-63 lowercase letters, digits, dots '
     "and hyphens, starting and ending with a letter or digit"),
    ({"sink.type": "s3", "sink.bucket": "my..logs"},
     'sink.bucket: invalid bucket name "my..logs": must not contain ".."'),
    ({"sink.type": "s3", "sink.bucket": "192.168.1.1"},
     'sink.bucket: invalid bucket name "192.168.1.1": must not look like an IP address'),
    ({"sink.prefix": "a//b"}, 'sink.prefix: must not contain "//" or ".." segments, got "a//b"'),
    ({"sink.prefix": "/a/../b/"},
     'sink.prefix: must not contain "//" or ".." segments, got "a/../b"'),
    ({"sink.endpoint_url": "ftp://x"},
     'sink.endpoint_url: must be an http:// or https:// URL with a host, got "ftp://x"'),
    ({"sink.endpoint_url": "http://"},
     'sink.endpoint_url: must be an http:// or https:// URL with a host, got "http://"'),
    ({"sink.compression_level": 23}, "sink.compression_level: must be between 1 and 22, got 23"),
    ({"sink.upload_concurrency": 0}, "sink.upload_concurrency: must be between 1 and 64, got 0"),
    ({"sink.region": ""}, "sink.region: must not be empty"),
    ({"health.listen": "nonsense"}, 'health.listen: expected "host:port", got "nonsense"'),
    ({"health.listen": "::1:8686"}, 'health.listen: expected "host:port", got "::1:8686"'),
    ({"health.listen": "0.0.0.0:70000"},
     "health.listen: port must be between 0 and 65535, got 70000"),
    ({"enrich.collision_prefix": ""}, "enrich.collision_prefix: must not be empty"),
    ({"enrich.host": "yes"}, "enrich.host: expected a boolean, got string"),
    ({"enrich.fields": {"tags": ["a"]}},
     "enrich.fields.tags: expected a string, number or boolean, got array"),
    ({"state_dir": 5}, "state_dir: expected a string, got integer"),
    ({"retention.max_age_secs": 0}, "retention.max_age_secs: must be greater than 0, got 0"),
    ({"retention.max_total_bytes": "lots"},
     'retention.max_total_bytes: invalid size "lots": expected a number with an optional'
     ' unit, like "8MiB" or "100KB"'),
    ({"retention.keep": 3}, "retention.keep: unknown key"),
    ({"disk.high_watermark": 1.5}, "disk.high_watermark: must be between 0 and 1, got 1.5"),
    ({"disk.critical_watermark": 0.2}, "disk.critical_watermark: must be at least 0.5, got 0.2"),
    ({"disk.high_watermark": 0.97},
     "disk.critical_watermark: must be at least high_watermark (0.97), got 0.95"),
    ({"disk.on_critical": "panic"},
     'disk.on_critical: must be one of "keep", "delete_unshipped", got "panic"'),
    ({"sources": {"my app": {"include": ["/x"]}}},
     "sources.my app: source name must match ^[A-Za-z0-9][A-Za-z0-9_.-]*$ "
     "(it is used in object keys)"),
]  # fmt: skip


@pytest.mark.parametrize(("changes", "message"), BAD_CONFIGS, ids=[m for _, m in BAD_CONFIGS])
def test_bad_config_reports_exact_problem(changes: dict[str, Any], message: str) -> None:
    assert problems(config_with(changes)) == [message]


def test_every_problem_is_reported_at_once() -> None:
    data = config_with(
        {
            "sink.type": "s3",
            "sink.path": DELETE,
            "sink.buckt": "logs",
            "batch.max_records": "many",
            "sources.app.include": ["/a", 7],
            "health.listen": "nonsense",
        }
    )
    assert problems(data) == [
        "sources.app.include[1]: expected a string, got integer",
        "batch.max_records: expected an integer, got string",
        'sink.buckt: unknown key (did you mean "bucket"?)',
        'sink.bucket: required when sink.type = "s3"',
        'health.listen: expected "host:port", got "nonsense"',
    ]


def test_full_config_file_with_every_contract_key(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(FULL_CONFIG)
    settings = load_config(path, environ={})
    assert settings.config_path == path
    assert settings.state_dir == Path("/var/lib/shipper")
    source = settings.sources["app"]
    assert source.name == "app"
    assert source.include == ("/var/log/app/*.log",)
    assert source.exclude == ()
    assert source.read_from == "beginning"
    assert settings.enrich.fields == {"service": "orchestrator"}
    assert settings.batch == BatchSettings(max_bytes=8 * MiB, max_records=100_000, max_age_secs=5.0)
    sink = settings.sink
    assert sink.type == "s3"
    assert sink.path == tmp_path / "shipped"
    assert sink.bucket == "logs"
    assert sink.prefix == "app"
    assert sink.endpoint_url == "http://127.0.0.1:8333"
    assert sink.region == "us-east-1"
    assert settings.health == HealthSettings(listen="127.0.0.1:8686", host="127.0.0.1", port=8686)


def test_defaults() -> None:
    settings = parse(minimal())
    assert settings.state_dir == Path("/var/lib/shipper")
    assert settings.enrich == EnrichSettings()
    assert settings.enrich.host is True
    assert settings.enrich.collision_prefix == "shipper_"
    assert settings.batch == BatchSettings(max_bytes=8 * MiB, max_records=100_000, max_age_secs=5.0)
    assert settings.spool == SpoolSettings(max_bytes=256 * MiB)
    assert settings.health == HealthSettings()
    assert settings.poll_interval_secs == 1.0
    assert settings.shutdown_timeout_secs == 30.0
    assert settings.config_path is None
    source = settings.sources["app"]
    assert (source.fingerprint_bytes, source.read_chunk_bytes) == (256, MiB)
    assert (source.rotate_wait_secs, source.read_from) == (5.0, "beginning")
    sink = settings.sink
    assert (sink.compression_level, sink.upload_concurrency, sink.prefix) == (3, 4, "")
    assert sink.bucket is sink.endpoint_url is sink.region is sink.storage_class is None


def test_accepted_value_forms() -> None:
    settings = parse(
        config_with(
            {
                "sources.app.fingerprint_bytes": "1KiB",
                "sources.app.read_from": "end",
                "sink.prefix": "/logs/app/",
                "enrich.fields": {"env": "prod", "shard": 3, "weight": 0.5, "canary": False},
                "health.listen": "[::1]:0",
                "shutdown_timeout_secs": 0,
                "poll_interval_secs": 0.25,
            }
        )
    )
    assert settings.sources["app"].fingerprint_bytes == KiB
    assert settings.sources["app"].read_from == "end"
    assert settings.sink.prefix == "logs/app"
    assert settings.enrich.fields == {"env": "prod", "shard": 3, "weight": 0.5, "canary": False}
    assert (settings.health.host, settings.health.port) == ("::1", 0)
    assert settings.shutdown_timeout_secs == 0.0
    assert settings.poll_interval_secs == 0.25


def test_settings_are_immutable() -> None:
    settings = parse(minimal())
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.state_dir = Path("/tmp")  # type: ignore[misc]
    with pytest.raises(TypeError):
        settings.sources["other"] = settings.sources["app"]  # type: ignore[index]


def test_relative_paths_resolve_against_config_directory() -> None:
    settings = parse(
        config_with(
            {
                "state_dir": "state",
                "sink.path": "./shipped",
                "sources.app.include": ["logs/*.log", "/abs/*.log"],
                "sources.app.exclude": ["*.gz", "logs/old/*.log", "/abs/skip.log"],
            }
        )
    )
    assert settings.state_dir == BASE / "state"
    assert settings.sink.path == BASE / "shipped"
    assert settings.sources["app"].include == ("/etc/shipper/logs/*.log", "/abs/*.log")
    assert settings.sources["app"].exclude == (
        "*.gz",
        "/etc/shipper/logs/old/*.log",
        "/abs/skip.log",
    )


def test_load_config_resolves_against_absolute_config_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "shipper.toml").write_text(
        'state_dir = "state"\n[sources.app]\ninclude = ["*.log"]\n'
        '[sink]\ntype = "directory"\npath = "out"\n'
    )
    monkeypatch.chdir(tmp_path)
    settings = load_config(Path("etc/shipper.toml"), environ={})
    assert settings.state_dir == tmp_path / "etc" / "state"
    assert settings.sink.path == tmp_path / "etc" / "out"
    assert settings.sources["app"].include == (str(tmp_path / "etc" / "*.log"),)


class TestInterpolation:
    def test_set_variable(self) -> None:
        settings = parse(config_with({"sink.path": "${OUT}/logs"}), {"OUT": "/data"})
        assert settings.sink.path == Path("/data/logs")

    def test_default_when_unset_or_empty(self) -> None:
        data = config_with({"sink.region": "${REGION:-us-east-1}", "sink.prefix": "${P:-app}"})
        settings = parse(data, {"P": ""})
        assert (settings.sink.region, settings.sink.prefix) == ("us-east-1", "app")

    def test_set_variable_beats_default(self) -> None:
        settings = parse(config_with({"sink.region": "${REGION:-us-east-1}"}), {"REGION": "eu"})
        assert settings.sink.region == "eu"

    def test_missing_variable_names_key_path_including_list_index(self) -> None:
        data = config_with({"sources.app.include": ["/ok/*.log", "${LOG_DIR}/*.log"]})
        assert problems(data) == ["sources.app.include[1]: environment variable LOG_DIR is not set"]

    def test_inside_nested_tables(self) -> None:
        data = config_with({"enrich.fields": {"service": "${SERVICE}", "env": "${ENV:-dev}"}})
        settings = parse(data, {"SERVICE": "api"})
        assert settings.enrich.fields == {"service": "api", "env": "dev"}

    def test_double_dollar_is_a_literal_dollar(self) -> None:
        data = config_with({"enrich.fields": {"a": "cost$$5", "b": "$${HOME}", "c": "$plain"}})
        settings = parse(data, {"HOME": "/root"})
        assert settings.enrich.fields == {"a": "cost$5", "b": "${HOME}", "c": "$plain"}

    def test_malformed_reference(self) -> None:
        data = config_with({"sink.path": "/srv/${oops"})
        assert problems(data) == [
            'sink.path: malformed "${" at character 6: expected ${VAR} or ${VAR:-default} '
            "(write $$ for a literal $)"
        ]

    def test_keys_are_not_interpolated(self) -> None:
        data = config_with({"sink.${KEY}": "x"})
        assert problems(data, {"KEY": "bucket"}) == ["sink.${KEY}: unknown key"]

    def test_load_config_uses_os_environ_by_default(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        path = tmp_path / "config.toml"
        path.write_text(
            '[sources.app]\ninclude = ["/x"]\n[sink]\ntype = "directory"\npath = "${SHIP_OUT}"\n'
        )
        monkeypatch.setenv("SHIP_OUT", "/srv/out")
        assert load_config(path).sink.path == Path("/srv/out")


class TestLoadConfigFileErrors:
    def test_missing_file(self, tmp_path: Path) -> None:
        path = tmp_path / "absent.toml"
        with pytest.raises(ConfigError) as excinfo:
            load_config(path, environ={})
        assert [str(p) for p in excinfo.value.problems] == [
            f"{path}: cannot read config file: No such file or directory"
        ]

    def test_toml_syntax_error_names_file_and_line(self, tmp_path: Path) -> None:
        path = tmp_path / "config.toml"
        path.write_text('[sink]\ntype = "s3\n')
        with pytest.raises(ConfigError) as excinfo:
            load_config(path, environ={})
        (problem,) = excinfo.value.problems
        assert str(problem).startswith(f"{path}: invalid TOML: ")
        assert "line 2" in str(problem)

    def test_invalid_utf8(self, tmp_path: Path) -> None:
        path = tmp_path / "config.toml"
        path.write_bytes(b'state_dir = "\xff"\n')
        with pytest.raises(ConfigError) as excinfo:
            load_config(path, environ={})
        (problem,) = excinfo.value.problems
        assert str(problem).startswith(f"{path}: ")


class TestFindConfigPath:
    def test_cli_value_wins(self) -> None:
        assert find_config_path("/a.toml", {CONFIG_ENV_VAR: "/b.toml"}) == Path("/a.toml")

    def test_environment_variable_next(self) -> None:
        assert find_config_path(None, {CONFIG_ENV_VAR: "/b.toml"}) == Path("/b.toml")

    def test_default_last(self) -> None:
        assert find_config_path(None, {}) == DEFAULT_CONFIG_PATH
        assert Path("/etc/shipper/config.toml") == DEFAULT_CONFIG_PATH

    def test_empty_values_count_as_unset(self) -> None:
        assert find_config_path("", {CONFIG_ENV_VAR: ""}) == DEFAULT_CONFIG_PATH


def test_multiline_settings_are_validated() -> None:
    from shipper.config import parse_config
    from shipper.errors import ConfigError

    base = {"sink": {"type": "directory", "path": "out"}}
    ok = parse_config(
        {**base, "sources": {"app": {"include": ["a"], "multiline": {"preset": "json"}}}},
        base_dir=Path("/x"),
        environ={},
    )
    assert ok.sources["app"].multiline.preset == "json"
    with pytest.raises(ConfigError) as info:
        parse_config(
            {
                **base,
                "sources": {
                    "app": {
                        "include": ["a"],
                        "multiline": {
                            "preset": "java",
                            "start_pattern": "(",
                            "timeout_secs": 0,
                            "max_line": 3,
                        },
                    }
                },
            },
            base_dir=Path("/x"),
            environ={},
        )
    messages = [str(p) for p in info.value.problems]
    assert (
        'sources.app.multiline.preset: must be one of "python_traceback", "json", got "java"'
        in messages
    )
    assert any(
        m.startswith("sources.app.multiline.start_pattern: invalid regular expression")
        for m in messages
    )
    assert "sources.app.multiline.timeout_secs: must be greater than 0, got 0" in messages
    assert any(m.startswith("sources.app.multiline.max_line: unknown key") for m in messages)


PROCESSING_CONFIG = """\
[sources.app]
include = ["/var/log/app/*.log"]
[sink]
type = "directory"
path = "/srv/shipped"
[parse]
timestamp_field = "event_time"
[enrich]
kubernetes = false
file_path = true
file_offset = true
[redact]
key_action = "hash"
hash_key_env = "MY_HASH_KEY"
[redact.keys]
session = "off"
user_email = "hash"
[redact.detectors]
email = "hash"
us_ssn = "off"
credit_card = "partial"
[[redact.custom]]
name = "employee_id"
pattern = 'EMP-\\d{6}'
[sample]
key_field = "trace.id"
keep_levels_at_or_above = "error"
[[sample.rules]]
name = "health"
rate = 0.01
match = { message = { regex = "^GET /healthz" }, level = ["DEBUG", "INFO"], status = 200 }
[[sample.rules]]
rate = 0
match = { logger = "noisy" }
[sample.cap]
max_per_sec = 50
"""


def test_processing_tables_parse(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(PROCESSING_CONFIG)
    settings = load_config(path, {"MY_HASH_KEY": "0123456789abcdef0123"})
    assert settings.parse.timestamp_fields == ("event_time",)
    assert not settings.enrich.kubernetes and settings.enrich.file_path
    redact = settings.redact
    assert redact.hash_key == b"0123456789abcdef0123"
    assert "session" not in redact.keys and redact.keys["password"] == "hash"
    assert redact.keys["user_email"] == "hash"
    assert "us_ssn" not in redact.detectors and redact.detectors["credit_card"] == "partial"
    assert redact.detectors["jwt"] == "mask"
    [(detector, action)] = redact.custom
    assert detector.name == "employee_id" and action == "mask"
    assert "0123456789" not in repr(settings)  # the key never reaches a log line
    sample = settings.sample
    assert sample.key_field == ("trace", "id") and sample.keep_level == 40
    health, second = sample.rules
    assert health.name == "health" and health.rate == 0.01 and len(health.conditions) == 3
    assert second.name == "rule2" and second.rate == 0.0
    assert sample.cap is not None and sample.cap.max_per_sec == 50
    assert sample.cap.key_field == ("message",) and sample.cap.summary_interval_secs == 60


BAD_PROCESSING: list[tuple[dict[str, Any], str]] = [
    (
        {"redact.key_action": "shred"},
        'redact.key_action: must be one of "mask", "hash", "remove", "partial", got "shred"',
    ),
    (
        {"redact.detectors": {"emial": "mask"}},
        'redact.detectors.emial: unknown detector (did you mean "email"?)',
    ),
    (
        {"redact.detectors": {"email": "of"}},
        'redact.detectors.email: must be one of "mask", "hash", "remove", "partial", "off", '
        'got "of"',
    ),
    (
        {"redact.keys": {"-_-": "mask"}},
        "redact.keys.-_-: a key name needs at least one letter or digit",
    ),
    (
        {"redact.detectors": {"email": "hash"}},
        "redact.hash_key_env: the hash action needs a key of at least 16 bytes in "
        "$SHIPPER_HASH_KEY (it is not set)",
    ),
    (
        {"redact.custom": [{"name": "x", "pattern": "(unclosed"}]},
        "redact.custom[0].pattern: invalid regular expression: missing ): (unclosed "
        "(RE2 syntax: no lookaround or backreferences)",
    ),
    (
        {"redact.custom": [{"name": "x", "pattern": "(?<!a)b"}]},
        "redact.custom[0].pattern: invalid regular expression: invalid perl operator: (?<! "
        "(RE2 syntax: no lookaround or backreferences)",
    ),
    (
        {"redact.custom": [{"name": "x", "pattern": "a*"}]},
        "redact.custom[0].pattern: matches the empty string, so it would match everywhere",
    ),
    (
        {"redact.custom": [{"name": "email", "pattern": "x"}]},
        'redact.custom[0].name: "email" is already a detector\'s name',
    ),
    (
        {"redact.custom": [{"name": "Bad Name", "pattern": "x"}]},
        "redact.custom[0].name: must match ^[a-z][a-z0-9_]{0,63}$ (it names a counter)",
    ),
    ({"redact.custom": [{"pattern": "x"}]}, "redact.custom[0].name: required"),
    ({"redact.custom": ["x"]}, "redact.custom[0]: expected a table, got string"),
    (
        {"sample.keep_levels_at_or_above": "loud"},
        'sample.keep_levels_at_or_above: unknown level "loud" (one of ALERT, CONFIG, CRIT, '
        "CRITICAL, DEBUG, EMERG, EMERGENCY, ERR, ERROR, FATAL, FINE, FINER, FINEST, INFO, "
        "INFORMATION, NOTICE, PANIC, SEVERE, TRACE, WARN, WARNING)",
    ),
    (
        {"sample.rules": [{"rate": 1.5, "match": {"a": 1}}]},
        "sample.rules[0].rate: must be between 0 and 1, got 1.5",
    ),
    ({"sample.rules": [{"match": {"a": 1}}]}, "sample.rules[0].rate: required"),
    ({"sample.rules": [{"rate": 0.5}]}, "sample.rules[0].match: required"),
    (
        {"sample.rules": [{"rate": 0.5, "match": {}}]},
        "sample.rules[0].match: needs at least one field condition",
    ),
    (
        {"sample.rules": [{"rate": 0.5, "match": {"m": {"regex": "("}}}]},
        "sample.rules[0].match.m.regex: invalid regular expression: missing ): ( "
        "(RE2 syntax: no lookaround or backreferences)",
    ),
    (
        {"sample.rules": [{"rate": 0.5, "match": {"m": {"regx": "a"}}}]},
        'sample.rules[0].match.m.regx: unknown key (did you mean "regex"?)',
    ),
    (
        {"sample.rules": [{"rate": 0.5, "match": {"m": [{"a": 1}]}}]},
        "sample.rules[0].match.m: expected a string, number or boolean, an array of them, or "
        '{ regex = "..." }',
    ),
    (
        {"sample.rules": [{"name": "a", "rate": 1, "match": {"m": 1}}] * 2},
        'sample.rules[1].name: another rule is already named "a"',
    ),
    ({"sample.cap": {"key_field": "message"}}, "sample.cap.max_per_sec: required"),
    (
        {"sample.cap": {"max_per_sec": 0}},
        "sample.cap.max_per_sec: must be between 0 and 10000000, got 0".replace("0 and", "1 and"),
    ),
    ({"parse.timestamp_field": ""}, "parse.timestamp_field: must not be empty"),
]


@pytest.mark.parametrize(("changes", "expected"), BAD_PROCESSING)
def test_bad_processing_settings_name_the_key(changes: dict[str, Any], expected: str) -> None:
    assert expected in problems(config_with(changes))


def test_a_short_hash_key_is_refused() -> None:
    data = config_with({"redact.key_action": "hash"})
    assert problems(data, {"SHIPPER_HASH_KEY": "short"}) == [
        "redact.hash_key_env: the hash action needs a key of at least 16 bytes in $SHIPPER_HASH_KEY"
    ]


def test_off_lifts_a_built_in_key_in_any_spelling() -> None:
    settings = parse(config_with({"redact.keys": {"Set-Cookie": "off", "SESSION": "off"}}))
    assert "set_cookie" not in settings.redact.keys and "session" not in settings.redact.keys
    assert "cookie" in settings.redact.keys


def test_an_environment_value_that_is_not_utf8_is_refused() -> None:
    data = config_with({"enrich.fields": {"pod": "${POD}"}})
    assert problems(data, {"POD": "caf\udce9"}) == [
        "enrich.fields.pod: environment variable POD is not valid UTF-8"
    ]


S3 = {"sink.type": "s3", "sink.bucket": "logs"}

BAD_SINK: list[tuple[dict[str, Any], str]] = [
    ({"sink.codec": "lz4"}, 'sink.codec: must be one of "zstd", "gzip", got "lz4"'),
    (
        {"sink.codec": "gzip", "sink.compression_level": 12},
        "sink.compression_level: must be between 1 and 9, got 12",
    ),
    ({"sink.key_template": "{source}/{start}"}, "sink.key_template: must contain {host}"),
    ({"sink.key_template": "%c/{host}{fingerprint}{start}{end}"}, 'key_template: "%c" depends'),
    ({"sink.key_fields": {"env": 1}}, "sink.key_fields.env: expected a string, got integer"),
    ({"sink.tags": {"team": "a"}}, 'sink.tags: only applies to sink.type = "s3"'),
    ({**S3, "sink.server_side_encryption": "aes"}, "sink.server_side_encryption: must be one"),
    (
        {**S3, "sink.server_side_encryption": "AES256", "sink.kms_key_id": "k"},
        'sink.kms_key_id: needs server_side_encryption = "aws:kms"',
    ),
    ({**S3, "sink.object_lock_mode": "COMPLIANCE"}, "object_lock_mode and object_lock_retain"),
    ({**S3, "sink.object_lock_retain_days": 0}, "sink.object_lock_retain_days: must be between"),
    ({**S3, "sink.checksum_algorithm": "MD5"}, 'sink.checksum_algorithm: must be one of "CRC32"'),
    ({**S3, "sink.multipart_part_size": "1MiB"}, "multipart_part_size: must be between 5.0MiB"),
    ({**S3, "sink.tags": {f"t{i}": "v" for i in range(11)}}, "sink.tags: at most 10 tags"),
    ({"sources.app.stale_after_secs": 0}, "sources.app.stale_after_secs: must be greater than 0"),
]


@pytest.mark.parametrize(("changes", "expected"), BAD_SINK)
def test_bad_store_settings_name_the_key(changes: dict[str, Any], expected: str) -> None:
    found = problems(config_with(changes))
    assert any(expected in p for p in found), found


def test_store_settings_parse() -> None:
    sink = parse(
        config_with(
            {
                **S3,
                "sink.codec": "gzip",
                "sink.key_template": "{env}/%Y/{source}/{host}/{fingerprint}-{start}-{end}",
                "sink.key_fields": {"env": "prod"},
                "sink.server_side_encryption": "aws:kms",
                "sink.kms_key_id": "alias/logs",
                "sink.tags": {"team": "agents"},
                "sink.object_lock_mode": "COMPLIANCE",
                "sink.object_lock_retain_days": 365,
                "sink.checksum_algorithm": "SHA256",
                "sink.multipart_threshold": "8MiB",
                "sink.multipart_part_size": "5MiB",
            }
        )
    ).sink
    assert (sink.codec, sink.compression_level, sink.checksum_algorithm) == ("gzip", 6, "SHA256")
    assert dict(sink.key_fields) == {"env": "prod"} and dict(sink.tags) == {"team": "agents"}
    assert (sink.server_side_encryption, sink.kms_key_id) == ("aws:kms", "alias/logs")
    assert (sink.object_lock_mode, sink.object_lock_retain_days) == ("COMPLIANCE", 365)
    assert (sink.multipart_threshold, sink.multipart_part_size) == (8 * MiB, 5 * MiB)
    defaults = parse(minimal()).sink
    assert (defaults.codec, defaults.compression_level, defaults.checksum_algorithm) == (
        "zstd",
        3,
        "CRC32",
    )


SECRET = "hunter2-db-password"


class TestNoSecretInProblems:
    """A value ``${VAR}`` took from the environment may be a secret: problems name the
    key path and the variable, never the value."""

    @pytest.mark.parametrize(
        ("changes", "expected"),
        [
            (
                {"sink.codec": "${DB_PASSWORD}"},
                'sink.codec: must be one of "zstd", "gzip", got a value from ${DB_PASSWORD}',
            ),
            (
                {**S3, "sink.bucket": "${DB_PASSWORD}x_"},
                "sink.bucket: invalid bucket name (a value from ${DB_PASSWORD}): use 3-63",
            ),
            (
                {"sink.prefix": "a//${DB_PASSWORD}"},
                'sink.prefix: must not contain "//" or ".." segments,'
                " got a value from ${DB_PASSWORD}",
            ),
            (
                {"batch.max_bytes": "${DB_PASSWORD}"},
                "batch.max_bytes: invalid size: a value from ${DB_PASSWORD}",
            ),
            (
                {"batch.max_bytes": "${SIZE}"},
                "batch.max_bytes: must be between 1.0KiB and 1.0GiB, got a value from ${SIZE}",
            ),
            (
                {"health.listen": "${DB_PASSWORD}"},
                'health.listen: expected "host:port", got a value from ${DB_PASSWORD}',
            ),
            (
                {"sample.keep_levels_at_or_above": "${DB_PASSWORD}"},
                "sample.keep_levels_at_or_above: unknown level a value from ${DB_PASSWORD}",
            ),
            (
                {"sink.type": "${A:-s}${DB_PASSWORD}"},
                'sink.type: must be one of "s3", "directory", got a value from ${A} and'
                " ${DB_PASSWORD}",
            ),
            (
                # Quoted under another key (the template's check): still hidden.
                {"sink.key_fields": {"env": "${DB_PASSWORD}/x"}, "sink.key_template": "{env}/{x}"},
                "[value of ${DB_PASSWORD}]",
            ),
            (
                {"redact.custom": [{"name": "mine", "pattern": "(${DB_PASSWORD}"}]},
                "redact.custom[0].pattern: invalid regular expression",
            ),
        ],
    )
    def test_a_bad_value_from_the_environment_is_not_printed(
        self, changes: dict[str, Any], expected: str
    ) -> None:
        found = problems(config_with(changes), {"DB_PASSWORD": SECRET, "SIZE": "2GiB"})
        assert any(expected in p for p in found), found
        assert not any("hunter2" in p for p in found), found

    def test_a_value_written_in_the_file_is_still_quoted(self) -> None:
        assert problems(config_with({"sink.codec": "lz4"})) == [
            'sink.codec: must be one of "zstd", "gzip", got "lz4"'
        ]

    def test_expanded_values_are_kept_for_the_output_scrubber(self) -> None:
        settings = parse(
            config_with(
                {
                    "sink.prefix": "${PREFIX:-app}",
                    "sink.key_fields": {"team": "${TEAM}"},
                    "enrich.fields": {"region": "${REGION:-eu}"},
                }
            ),
            {"TEAM": SECRET, "REGION": ""},
        )
        # The defaults were written in the file: not from the environment.
        assert dict(settings.expanded_values) == {SECRET: "TEAM"}
        assert "expanded_values" not in repr(settings)


class TestEndpointCredentials:
    @pytest.mark.parametrize(
        "url",
        [
            "http://admin:s3cr3t-pass@127.0.0.1:8333",
            "https://s3cr3t-pass@s3.example.com",
            "http://admin:s3cr3t/pass@127.0.0.1:8333",
            "http://admin:s3cr3t-pass@",
        ],
    )
    def test_userinfo_is_refused_without_printing_it(self, url: str) -> None:
        [found] = problems(config_with({**S3, "sink.endpoint_url": url}))
        assert found.startswith("sink.endpoint_url: must not contain credentials")
        assert "AWS_ACCESS_KEY_ID" in found and "AWS_SECRET_ACCESS_KEY" in found
        assert "s3cr3t" not in found and "admin" not in found

    def test_userinfo_from_the_environment_is_refused_too(self) -> None:
        data = config_with({**S3, "sink.endpoint_url": "${S3_URL}"})
        [found] = problems(data, {"S3_URL": "http://admin:s3cr3t-pass@127.0.0.1:8333"})
        assert found.startswith("sink.endpoint_url: must not contain credentials")
        assert "s3cr3t" not in found

    def test_a_query_string_is_refused_without_printing_it(self) -> None:
        url = "https://s3.example.com/?X-Amz-Signature=0badc0ffee"
        [found] = problems(config_with({**S3, "sink.endpoint_url": url}))
        assert found.startswith("sink.endpoint_url: must not contain a query string")
        assert "0badc0ffee" not in found

    def test_a_plain_endpoint_from_the_environment_is_accepted(self) -> None:
        data = config_with({**S3, "sink.endpoint_url": "${S3_URL}"})
        assert parse(data, {"S3_URL": "http://127.0.0.1:8333"}).sink.endpoint_url == (
            "http://127.0.0.1:8333"
        )


def test_the_hash_key_is_hidden_like_an_expanded_value() -> None:
    key = "k" * 20
    settings = parse(config_with({"redact.key_action": "hash"}), {"SHIPPER_HASH_KEY": key})
    assert settings.redact.hash_key == key.encode()
    assert settings.expanded_values[key] == "SHIPPER_HASH_KEY"


def test_a_hash_key_that_is_not_utf8_is_taken_as_bytes() -> None:
    key = "caf\udce9" * 5
    settings = parse(config_with({"redact.key_action": "hash"}), {"SHIPPER_HASH_KEY": key})
    assert settings.redact.hash_key == b"caf\xe9" * 5
