"""The command line: argv in, exit code out. No business logic lives here."""

from __future__ import annotations

__all__ = ["main"]

import argparse
import asyncio
import json
import logging
import os
import sys
import threading
from collections.abc import Sequence

from shipper import __version__
from shipper.config import (
    CONFIG_ENV_VAR,
    DEFAULT_CONFIG_PATH,
    Settings,
    find_config_path,
    load_config,
)
from shipper.errors import ConfigError, ShipperError
from shipper.exit_codes import ExitCode
from shipper.logs import setup_logging
from shipper.ops.status import fetch_status, render_table, status_url
from shipper.redact_output import output_scrubber

log = logging.getLogger("shipper")


def _parser() -> argparse.ArgumentParser:
    config_option = argparse.ArgumentParser(add_help=False)
    config_option.add_argument(
        "-c",
        "--config",
        metavar="PATH",
        help=f"config file (default: ${CONFIG_ENV_VAR}, then {DEFAULT_CONFIG_PATH})",
    )
    parser = argparse.ArgumentParser(
        prog="shipper",
        description="Ship JSON log files to S3-compatible storage, exactly once.",
    )
    parser.add_argument("--version", action="version", version=f"shipper {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser(
        "check-config",
        parents=[config_option],
        help="validate the config file without touching the network",
    )
    levels = ["DEBUG", "INFO", "WARNING", "ERROR"]
    run = commands.add_parser("run", parents=[config_option], help="run the daemon")
    run.add_argument("--log-level", default="INFO", choices=levels)
    backfill = commands.add_parser(
        "backfill",
        parents=[config_option],
        help="ship every file the sources select (compressed ones too) once, then exit",
        description=(
            "Read every file the config's sources select from its checkpoint (or its"
            " start) to its end, deliver all of it and exit 0. Interrupted (exit 3), it"
            " goes on from where it stopped when run again; nothing is shipped twice."
            " Give it its own state_dir unless the daemon is stopped."
        ),
    )
    backfill.add_argument("--log-level", default="INFO", choices=levels)
    status = commands.add_parser(
        "status",
        parents=[config_option],
        help="show what a running daemon is shipping (its /status endpoint)",
    )
    status.add_argument("--json", action="store_true", help="print the JSON as it is")
    status.add_argument("--url", help="the status URL (default: from health.listen in the config)")
    return parser


#: Credentials boto3 reads from the environment: hidden from our output like the
#: config's ``${VAR}`` values, should a library's message ever quote one.
_CREDENTIAL_VARIABLES = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")


def _load(path_arg: str | None) -> Settings:
    """Load the config; from then on the logs and the HTTP endpoint hide what its
    ``${VAR}`` references took from the environment, and the store's credentials."""
    output_scrubber.hide(
        {os.environ[name]: name for name in _CREDENTIAL_VARIABLES if os.environ.get(name)}
    )
    settings = load_config(find_config_path(path_arg, os.environ))
    output_scrubber.hide(settings.expanded_values)
    return settings


def _check_config(args: argparse.Namespace) -> ExitCode:
    try:
        settings = _load(args.config)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return ExitCode.CONFIG_INVALID
    print(
        f"{settings.config_path}: ok ({len(settings.sources)} source(s), sink {settings.sink.type})"
    )
    return ExitCode.OK


def _run(args: argparse.Namespace, *, one_shot: bool = False) -> ExitCode:
    setup_logging(args.log_level)
    try:
        settings = _load(args.config)
    except ConfigError as exc:
        for problem in exc.problems:
            log.error("invalid config", extra={"problem": str(problem)})
        return ExitCode.CONFIG_INVALID
    from shipper.app.daemon import (
        Daemon,  # the daemon pulls in boto3; check-config does not need it
    )

    previous: Settings | None = None
    try:
        while True:
            daemon = Daemon(settings, one_shot=one_shot)
            try:
                code = asyncio.run(daemon.run())
            except ShipperError as exc:
                if previous is None:
                    raise
                # A reloaded config that validates but cannot run (its health port is
                # taken, its state_dir locked): back to the one that ran.
                log.error(
                    "the reloaded config cannot run; going back to the previous one",
                    extra={"error": str(exc)},
                )
                settings, previous = previous, None
                continue
            if code != ExitCode.OK or daemon.reload_settings is None:
                break
            # SIGHUP with a changed, valid config: run again on it.
            previous, settings = settings, daemon.reload_settings
            output_scrubber.hide(settings.expanded_values)
    except ShipperError as exc:
        log.critical("cannot run", extra={"error": str(exc)})
        return ExitCode.RUNTIME_ERROR
    except Exception:
        # A bug, not an input: say so in the same JSON log stream. Everything sealed
        # is in the spool, so a restart (systemd, Kubernetes) loses nothing.
        log.exception("internal error; exiting")
        return ExitCode.RUNTIME_ERROR
    if threading.active_count() > 1:
        # An upload stuck on a hung store would hold the exit for its socket timeouts.
        # Everything is saved by now, and the spool re-sends what was in flight.
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _status(args: argparse.Namespace) -> ExitCode:
    url = args.url
    try:
        if url is None:
            health = _load(args.config).health
            url = status_url(health.host, health.port)
        status = fetch_status(url)
    except ConfigError as exc:
        print(f"invalid config:\n{exc}", file=sys.stderr)
        return ExitCode.CONFIG_INVALID
    except ShipperError as exc:
        print(str(exc), file=sys.stderr)
        return ExitCode.RUNTIME_ERROR
    if args.json:
        print(json.dumps(status, indent=2, sort_keys=True))
    else:
        print(render_table(status))
    return ExitCode.OK


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "check-config":
        return int(_check_config(args))
    if args.command == "status":
        return int(_status(args))
    return int(_run(args, one_shot=args.command == "backfill"))
