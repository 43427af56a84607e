"""``[health]``: where the local endpoint listens."""

from __future__ import annotations

import ipaddress
import re

from shipper.config.model import HealthSettings, allowed_keys
from shipper.config.reader import Declared, Table

_HEALTH_KEYS = allowed_keys(HealthSettings, "host", "port")
_LISTEN_RE = re.compile(r"(?:\[(?P<v6>[^\]]+)\]|(?P<host>[^:\[\]\s]+)):(?P<port>\d+)")


def parse_health(table: Table | None) -> HealthSettings:
    if table is None:
        return HealthSettings()
    table.check_keys(_HEALTH_KEYS)
    listen = Declared(table, HealthSettings).string("listen")
    try:
        host, port = _split_listen(listen, table.shown("listen", listen))
    except ValueError as exc:
        table.problem("listen", str(exc))
        return HealthSettings()
    return HealthSettings(listen=listen, host=host, port=port)


def _split_listen(listen: str, shown: str) -> tuple[str, int]:
    """Split "host:port"; IPv6 hosts need brackets, as in URLs, to keep the port unambiguous.

    ``shown`` is how a message quotes ``listen`` (see ``Table.shown``).
    """
    match = _LISTEN_RE.fullmatch(listen)
    if match is None:
        raise ValueError(f'expected "host:port", got {shown}')
    host = match["host"]
    if host is None:
        host = match["v6"]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"invalid IPv6 address in {shown}") from None
    port = int(match["port"])
    if port > 65535:
        raise ValueError(f"port must be between 0 and 65535, got {port}")
    return host, port
