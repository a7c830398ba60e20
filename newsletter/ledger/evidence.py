"""What a request proves about a consent event: address, agent, page."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from flask import Request, current_app

MAX_USER_AGENT = 512
MAX_SOURCE_URL = 2000


@dataclass(frozen=True)
class Evidence:
    """The circumstances of an event, already minimised per IP_LOGGING."""

    ip: str | None = None
    user_agent: str | None = None
    source_url: str | None = None


def minimise_ip(address: str | None, mode: str) -> str | None:
    """Apply IP_LOGGING: ``full``, ``truncated`` (IPv4 /24, IPv6 /48) or ``none``."""
    if not address or mode == "none":
        return None
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        # An IPv4 client seen through a dual-stack socket (::ffff:a.b.c.d): its
        # /48 would be ::/48, the same for every IPv4 client on earth.
        ip = ip.ipv4_mapped
    if mode == "full":
        return str(ip)
    prefix = 24 if ip.version == 4 else 48
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


def evidence_from_request(request: Request, source_url: str | None = None) -> Evidence:
    """Evidence for the current request; the page defaults to the Referer."""
    source = source_url or request.headers.get("Referer") or request.url
    return Evidence(
        ip=minimise_ip(request.remote_addr, current_app.config["IP_LOGGING"]),
        user_agent=(request.headers.get("User-Agent") or "")[:MAX_USER_AGENT] or None,
        source_url=source[:MAX_SOURCE_URL],
    )
