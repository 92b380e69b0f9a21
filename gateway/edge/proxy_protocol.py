"""The PROXY protocol header (HAProxy's, versions 1 and 2) a proxy sends before the client's bytes. Pure.

A load balancer that passes TCP through (HAProxy ``send-proxy``/``send-proxy-v2``, nginx's stream
module with ``proxy_protocol on``, AWS NLB, Traefik) writes one header naming the client's address
first, then the client's own bytes (a TLS ClientHello or an HTTP request). The header is read
exactly, never a byte past it, so what follows belongs untouched to TLS or HTTP:
:func:`bytes_wanted` says how many more bytes may be read without reading past the header, and
:func:`parse` reads the complete header.

Spec: https://www.haproxy.org/download/3.0/doc/proxy-protocol.txt
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from typing import Final

V1_PREFIX: Final = b"PROXY "
V1_MAX: Final = 107  # the longest v1 line, CRLF included (spec section 2.1)
V2_SIGNATURE: Final = b"\r\n\r\n\x00\r\nQUIT\n"
V2_HEAD: Final = 16  # signature, version and command, family and transport, length
# Both versions are at least this long (v1 "PROXY UNKNOWN\r\n" is 15 bytes): reading it first never
# reads past a header, and tells the versions apart.
FIRST_READ: Final = len(V2_SIGNATURE)

# v2 address families (high nibble of byte 14) and the size of their address block.
_INET, _INET6, _UNIX = 0x1, 0x2, 0x3
_ADDRESS_BYTES: Final = {_INET: 12, _INET6: 36, _UNIX: 216}
_STREAM = 0x1
_LOCAL, _PROXY = 0x0, 0x1


class ProxyHeaderError(ValueError):
    """Not a PROXY protocol header, or a malformed one; the message says what is wrong."""


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    """What the header says. ``client`` is None when the connection's own address stands: a v2
    LOCAL command (the proxy's own health check), v1 UNKNOWN, or an address family without IPs."""

    version: int
    client: str | None
    client_port: int | None = None


def bytes_wanted(data: bytes) -> int:
    """How many more bytes the header needs at least: 0 once ``data`` is a complete header.

    Reading that many never reads past the header. Raises :class:`ProxyHeaderError` as soon as
    ``data`` cannot be the start of a header.
    """
    if not _may_start_header(data):
        raise ProxyHeaderError(f"not a PROXY protocol header (starts with {bytes(data[:16])!r})")
    if len(data) < FIRST_READ:
        return FIRST_READ - len(data)
    if data.startswith(V2_SIGNATURE):
        if len(data) < V2_HEAD:
            return V2_HEAD - len(data)
        return V2_HEAD + _v2_length(data) - len(data)
    if data.endswith(b"\r\n"):
        return 0
    if len(data) >= V1_MAX:
        raise ProxyHeaderError(f"PROXY v1 line longer than {V1_MAX} bytes without CRLF")
    # The line ends with CRLF: unless the last byte read is its CR, two more bytes cannot pass it.
    return 1 if data.endswith(b"\r") else 2


def parse(data: bytes) -> ProxyHeader:
    """The complete header ``data`` (``bytes_wanted(data) == 0``); ProxyHeaderError if malformed."""
    if bytes_wanted(data) != 0:
        raise ProxyHeaderError("incomplete PROXY protocol header")
    if data.startswith(V2_SIGNATURE):
        return _parse_v2(data)
    return _parse_v1(data)


def _may_start_header(data: bytes) -> bool:
    return V2_SIGNATURE.startswith(data[:12]) or data[:6] == V1_PREFIX[: len(data[:6])]


# -- version 1: one text line ------------------------------------------------------------------


def _parse_v1(data: bytes) -> ProxyHeader:
    line = data[:-2]
    if b"\r" in line or b"\n" in line:
        raise ProxyHeaderError("PROXY v1 line with a stray CR or LF")
    try:
        text = line.decode("ascii")
    except UnicodeDecodeError:
        raise ProxyHeaderError("PROXY v1 line is not ASCII") from None
    parts = text.split(" ")
    if len(parts) >= 2 and parts[1] == "UNKNOWN":
        return ProxyHeader(1, None)  # the receiver ignores whatever follows (spec 2.1)
    if len(parts) != 6 or parts[1] not in ("TCP4", "TCP6"):
        raise ProxyHeaderError(f"PROXY v1 line is not 'PROXY TCP4|TCP6 SRC DST SPORT DPORT': {text[:107]!r}")
    _, family, source, destination, source_port, destination_port = parts
    version = 4 if family == "TCP4" else 6
    client = _v1_address(source, version)
    _v1_address(destination, version)
    port = _v1_port(source_port)
    _v1_port(destination_port)
    return ProxyHeader(1, client, port)


def _v1_address(text: str, version: int) -> str:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise ProxyHeaderError(f"PROXY v1: {text[:45]!r} is not an IPv{version} address") from None
    if address.version != version:
        raise ProxyHeaderError(f"PROXY v1: {text!r} is not an IPv{version} address")
    return str(address)


def _v1_port(text: str) -> int:
    if not (text.isdigit() and text.isascii() and len(text) <= 5 and int(text) <= 65535):
        raise ProxyHeaderError(f"PROXY v1: {text[:10]!r} is not a port number")
    if len(text) > 1 and text.startswith("0"):
        raise ProxyHeaderError(f"PROXY v1: port {text!r} has a leading zero")
    return int(text)


# -- version 2: binary -------------------------------------------------------------------------


def _v2_length(data: bytes) -> int:
    length: int = struct.unpack_from("!H", data, 14)[0]
    return length


def _parse_v2(data: bytes) -> ProxyHeader:
    version, command = data[12] >> 4, data[12] & 0x0F
    if version != 2:
        raise ProxyHeaderError(f"PROXY v2 header with version {version}")
    if command not in (_LOCAL, _PROXY):
        raise ProxyHeaderError(f"PROXY v2 header with unknown command {command:#x}")
    family, transport = data[13] >> 4, data[13] & 0x0F
    if family > _UNIX or transport > 0x2:
        raise ProxyHeaderError(f"PROXY v2 header with unknown family/transport {data[13]:#04x}")
    if command == _LOCAL:
        return ProxyHeader(2, None)  # the proxy speaking for itself: the block is ignored (spec 2.2)
    block = data[V2_HEAD:]
    needed = _ADDRESS_BYTES.get(family, 0)
    if len(block) < needed:
        raise ProxyHeaderError(
            f"PROXY v2 address block of {len(block)} bytes, family {family} needs {needed}"
        )
    if family in (_INET, _INET6) and transport != _STREAM:
        raise ProxyHeaderError("PROXY v2 header for a datagram connection")
    source: ipaddress.IPv4Address | ipaddress.IPv6Address
    if family == _INET:
        source = ipaddress.IPv4Address(block[0:4])
        (port,) = struct.unpack_from("!H", block, 8)
    elif family == _INET6:
        source = ipaddress.IPv6Address(block[0:16])
        (port,) = struct.unpack_from("!H", block, 32)
    else:  # AF_UNSPEC or AF_UNIX: no IP address to go by (spec: use the connection's own)
        return ProxyHeader(2, None)
    # What follows the addresses (TLVs: ALPN, SNI, unique id) is not needed and skipped.
    return ProxyHeader(2, str(source), port)
