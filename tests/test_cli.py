"""The ``shipper`` command as users run it: a subprocess, its output and exit code."""

from __future__ import annotations

from pathlib import Path

from shipper import __version__
from shipper.exit_codes import ExitCode
from tests.support.daemon import run_cli

BAD = """
state_dir = "${STATE_DIR}"
[sources.app]
include = []
read_from = "middle"
[batch]
max_bytes = "8 parsecs"
max_recods = 5
[sink]
type = "s3"
endpoint_url = "ftp://example"
[health]
listen = "nonsense"
"""


def test_version() -> None:
    result = run_cli(["--version"])
    assert result.returncode == 0
    assert result.stdout.strip() == f"shipper {__version__}"


def test_check_config_reports_every_problem_with_its_key_path(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(BAD)
    result = run_cli(["check-config", "-c", str(config)], env={"STATE_DIR": ""})
    assert result.returncode == ExitCode.CONFIG_INVALID
    lines = result.stderr.splitlines()
    expected_prefixes = [
        "sources.app.include: ",
        "sources.app.read_from: ",
        "batch.max_bytes: ",
        'batch.max_recods: unknown key (did you mean "max_records"?)',
        'sink.bucket: required when sink.type = "s3"',
        "sink.endpoint_url: ",
        'health.listen: expected "host:port", got "nonsense"',
    ]
    for prefix in expected_prefixes:
        assert any(line.startswith(prefix) for line in lines), (prefix, lines)
    assert result.stdout == ""


def test_check_config_finds_the_file_through_the_environment(tmp_path: Path) -> None:
    config = tmp_path / "good.toml"
    config.write_text(
        '[sources.app]\ninclude = ["logs/*.log"]\n[sink]\ntype = "directory"\npath = "out"\n'
    )
    result = run_cli(["check-config"], env={"SHIPPER_CONFIG": str(config)})
    assert result.returncode == ExitCode.OK, result.stderr
    assert "ok" in result.stdout


def test_missing_config_file_is_named(tmp_path: Path) -> None:
    result = run_cli(["check-config", "-c", str(tmp_path / "nope.toml")])
    assert result.returncode == ExitCode.CONFIG_INVALID
    assert str(tmp_path / "nope.toml") in result.stderr


def test_run_with_an_invalid_config_starts_nothing(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(BAD)
    result = run_cli(["run", "-c", str(config)], env={"STATE_DIR": "x"})
    assert result.returncode == ExitCode.CONFIG_INVALID
    assert "sink.bucket: required" in result.stderr


def test_unusable_state_dir_is_a_runtime_error(tmp_path: Path) -> None:
    blocker = tmp_path / "state"
    blocker.write_text("not a directory")
    config = tmp_path / "c.toml"
    config.write_text(
        f'state_dir = "{blocker}"\n[sources.app]\ninclude = ["logs/*.log"]\n'
        '[sink]\ntype = "directory"\npath = "out"\n'
    )
    result = run_cli(["run", "-c", str(config)], timeout=60)
    assert result.returncode == ExitCode.RUNTIME_ERROR
    assert f"state_dir {blocker}" in result.stderr
