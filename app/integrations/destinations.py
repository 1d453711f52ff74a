"""Where outbound webhooks may go: public addresses, and the networks an operator allows.

Customers configure their own integrations' URLs, and the service sends to them from inside the
provider's network. Without a check, a URL naming a private, loopback or link-local address (the
cloud metadata service at 169.254.169.254, an internal admin page, the catalog's own database
port) would make the service an open proxy into that network (server-side request forgery).

A URL's host is resolved when a message is sent, every address it resolves to must be allowed,
and the request then goes to the checked address itself (with the name kept for the ``Host``
header and TLS server name and certificate checks), so that a DNS answer that changes between the
check and the connection cannot redirect it. Redirects are never followed (see the deliverer).
IP literals are refused already when an integration is saved.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field

import httpx

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

ALLOW_HINT = "an operator can allow a network with VMR_WEBHOOK_ALLOWED_NETWORKS"


class DestinationRefused(Exception):
    """The URL's host is, or resolves to, an address outbound webhooks may not reach."""


@dataclass(frozen=True)
class Destination:
    """A request target pinned to a checked address."""

    url: httpx.URL
    headers: dict[str, str] = field(default_factory=dict)
    extensions: dict[str, str] = field(default_factory=dict)


def _unmapped(address: IPAddress) -> IPAddress:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def is_allowed(address: IPAddress, allowed: Sequence[IPNetwork]) -> bool:
    """Public (globally routable) unicast addresses, and whatever the operator allowed."""
    address = _unmapped(address)
    if any(address in network for network in allowed):
        return True
    return address.is_global and not address.is_multicast


def _ip(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None  # a name


def _check_address(address: IPAddress, allowed: Sequence[IPNetwork]) -> None:
    if not is_allowed(address, allowed):
        raise DestinationRefused(f"{address} is not a public address; {ALLOW_HINT}.")


def check_literal(url: str, allowed: Sequence[IPNetwork]) -> None:
    """Refuse at once a URL whose host is an IP address (or ``localhost``) that is not allowed."""
    parsed = httpx.URL(url)
    host = parsed.host
    if host.lower() == "localhost" or host.lower().endswith(".localhost"):
        if not is_allowed(ipaddress.ip_address("127.0.0.1"), allowed):
            raise DestinationRefused(f"'{host}' is this machine; {ALLOW_HINT}.")
        return
    literal = _ip(host)
    if literal is not None:  # a name is checked when it is resolved, at each delivery
        _check_address(literal, allowed)
        return
    _check_name(parsed.raw_host)


def _check_name(raw_host: bytes) -> None:
    """A name DNS can look up: labels of 1-63 characters, 253 in all (RFC 1035)."""
    name = raw_host.decode("ascii", errors="replace").removesuffix(".")
    labels = name.split(".")
    if not name or len(name) > 253 or any(not 0 < len(label) <= 63 for label in labels):
        raise DestinationRefused(
            f"'{name}' is not a host name (labels of 1-63 characters between dots, 253 in all)"
        )


async def pin(url: str, allowed: Sequence[IPNetwork]) -> Destination:
    """Resolve ``url``'s host, check every address, and return the request pinned to the first."""
    parsed = httpx.URL(url)
    try:
        # The name as DNS, TLS and the Host header carry it: an internationalised name in its
        # ASCII (IDNA) form; httpx.URL.host gives the Unicode one, which no header may hold.
        host = parsed.raw_host.decode("ascii")
    except UnicodeDecodeError as exc:
        raise DestinationRefused(f"'{parsed.host}' is not a valid host name") from exc
    literal = _ip(host)
    if literal is not None:
        _check_address(literal, allowed)
        return Destination(url=parsed)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:  # UnicodeError: an empty or overlong label ("a..b")
        raise DestinationRefused(f"'{host}' does not resolve: {exc}") from exc
    addresses = list(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in infos))
    refused = [a for a in addresses if not is_allowed(a, allowed)]
    if refused or not addresses:
        shown = ", ".join(str(a) for a in refused) or "nothing"
        raise DestinationRefused(f"'{host}' resolves to {shown}, not a public address; {ALLOW_HINT}.")
    pinned = parsed.copy_with(host=str(_unmapped(addresses[0])))
    authority = host if parsed.port is None else f"{host}:{parsed.port}"
    extensions = {"sni_hostname": host} if parsed.scheme == "https" else {}
    return Destination(url=pinned, headers={"host": authority}, extensions=extensions)
