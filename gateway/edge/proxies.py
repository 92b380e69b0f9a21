"""Trusted proxies, and the client address they forward in ``X-Forwarded-For`` or ``Forwarded``. Pure.

Behind a reverse proxy every connection comes from the proxy. The proxy names the client in a
header, but so can anyone: a header is believed only from a peer in ``trusted_proxies``, and only
the header the operator says the proxies set (``forwarded_header``). A proxy appends the address it
saw to what it received, so the list is read from the right: trusted hops are skipped and the
first address that is not a trusted proxy is the client. Anything to its left was written by that
client and is ignored. (Reading the header the proxies do not set would let a client choose its
address: nginx, Apache, Caddy and Traefik pass an unknown ``Forwarded`` header through untouched.)
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

X_FORWARDED_FOR: Final = "x-forwarded-for"
FORWARDED: Final = "forwarded"
HEADERS: Final = (X_FORWARDED_FOR, FORWARDED)


def parse_address(text: str) -> Address | None:
    """An IP address, IPv4-mapped IPv6 ones as IPv4 (a dual-stack socket's view); None if not one."""
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def canonical(text: str) -> str:
    """The one spelling of an address used for limits, logs and metrics (unchanged if not an IP)."""
    address = parse_address(text)
    return text if address is None else str(address)


def parse_network(entry: str) -> Network:
    """``10.0.0.0/8``, ``fd00::/8`` or a single address; ValueError naming what is wrong."""
    try:
        return ipaddress.ip_network(entry.strip(), strict=True)
    except ValueError as exc:
        if "has host bits set" in str(exc):
            network = ipaddress.ip_network(entry.strip(), strict=False)
            raise ValueError(f"{entry!r} has host bits set: did you mean {network}?") from None
        raise ValueError(f"{entry!r} is not an IP address or a CIDR network like 10.0.0.0/8") from None


@dataclass(frozen=True, slots=True)
class TrustedProxies:
    """The peers whose forwarding headers (and PROXY protocol header) are believed."""

    networks: tuple[Network, ...] = ()

    @classmethod
    def parse(cls, entries: Iterable[str]) -> TrustedProxies:
        return cls(tuple(parse_network(entry) for entry in entries))

    def __bool__(self) -> bool:
        return bool(self.networks)

    def trusts(self, address: str) -> bool:
        parsed = parse_address(address)
        return parsed is not None and any(parsed in network for network in self.networks)


def forwarded_client(
    peer: str, headers: Sequence[tuple[bytes, bytes]], trusted: TrustedProxies, header: str
) -> str:
    """The client's address: ``peer``, or, from a trusted peer, what ``header`` says behind it.

    ``headers`` are the request's (names in lower case); ``header`` is ``x-forwarded-for`` or
    ``forwarded``. The lines of the header make one list, in order; each line is parsed alone, so
    that a quote a client left open cannot swallow what a proxy appended on its own line.
    """
    if not trusted.trusts(peer):
        return peer
    parse = forwarded_for if header == FORWARDED else x_forwarded_for
    name = header.encode()
    hops = [hop for key, value in headers if key == name for hop in parse(value.decode("latin-1"))]
    return _rightmost_untrusted(peer, hops, trusted) if hops else peer


def _rightmost_untrusted(peer: str, hops: list[str | None], trusted: TrustedProxies) -> str:
    current = peer
    for hop in reversed(hops):
        if hop is None:
            # "unknown", a hidden name or garbage: the hop to its right is the nearest known one.
            break
        current = hop
        if not trusted.trusts(hop):
            break
    return current


def x_forwarded_for(value: str) -> list[str | None]:
    """The addresses of ``X-Forwarded-For: client, proxy1, proxy2``; None where one is no IP.

    Some proxies add the port (``203.0.113.7:41234``, ``[2001:db8::1]:41234``): it is dropped.
    """
    return [_node_address(part.strip()) for part in value.split(",")]


def forwarded_for(value: str) -> list[str | None]:
    """The ``for=`` node of each element of ``Forwarded`` (RFC 7239); None where it names no IP
    (``unknown``, an obfuscated ``_name``, missing, or malformed)."""
    hops: list[str | None] = []
    for element in _split_unquoted(value, ","):
        node = None
        for pair in _split_unquoted(element, ";"):
            name, sep, raw = pair.partition("=")
            if sep and name.strip().lower() == "for":
                node = _unquote(raw.strip())
        hops.append(None if node is None else _node_address(node))
    return hops


def _node_address(node: str) -> str | None:
    """An address from ``1.2.3.4``, ``1.2.3.4:80``, ``[v6]``, ``[v6]:80`` or a bare IPv6; else None."""
    if node.startswith("["):
        host, sep, rest = node[1:].partition("]")
        if not sep or (rest and not (rest.startswith(":") and rest[1:].isdigit())):
            return None
        node = host
    elif node.count(":") == 1:  # IPv4 with a port
        host, _, port = node.partition(":")
        if not port.isdigit():
            return None
        node = host
    address = parse_address(node)
    return None if address is None else str(address)


def _split_unquoted(text: str, separator: str) -> list[str]:
    """``text`` cut at ``separator`` outside double-quoted strings (which may escape with ``\\``)."""
    parts: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for char in text:
        if escaped:
            escaped = False
        elif quoted and char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == separator and not quoted:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    parts.append("".join(current))
    return parts


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        inner = value[1:-1]
        out: list[str] = []
        escaped = False
        for char in inner:
            if escaped or char != "\\":
                out.append(char)
                escaped = False
            else:
                escaped = True
        return "".join(out)
    return value
