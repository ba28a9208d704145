"""``HOST:PORT`` addresses the configuration names (the inspector, the metrics endpoint),
which of them only this machine can reach, and where a client here dials a server bound to
one."""

from __future__ import annotations

import ipaddress

from ._errors import ConfigError


def parse_address(text: str, *, what: str = "address") -> tuple[str, int]:
    """``"HOST:PORT"`` (``"[::1]:8765"`` for IPv6) as ``(host, port)``; ConfigError naming
    ``what`` otherwise."""
    if not isinstance(text, str) or ":" not in text:
        raise ConfigError(f"{what} must be 'HOST:PORT' like '127.0.0.1:8765', got {text!r}")
    host, _, port_text = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ConfigError(f"{what} must be 'HOST:PORT' like '127.0.0.1:8765', got {text!r}")
    return host, int(port_text)


def is_loopback(host: str | None) -> bool:
    """True for names and addresses that only this machine can reach."""
    if host is None or host == "":
        return False  # every interface
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve anywhere


def dial_netloc(host: str, port: int) -> str:
    """The ``HOST:PORT`` of a URL that reaches, from this machine, a server bound to ``host``:
    one bound to every interface is reached at 127.0.0.1; an IPv6 address goes in brackets."""
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
