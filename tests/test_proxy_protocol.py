"""The PROXY protocol header (v1 text, v2 binary) as HAProxy sends it: the parser, read exactly
(never a byte of what follows), and the listener with ``proxy_protocol = true``: from trusted peers
only, a missing or garbled header closes the connection with a log line."""

from __future__ import annotations

import ipaddress
import logging
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import cast

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st
from trio_websocket import WebSocketConnection, wrap_client_stream

from gateway.edge.proxy_protocol import V2_SIGNATURE, ProxyHeader, ProxyHeaderError, bytes_wanted, parse
from tests.certificates import Authority
from tests.helpers import Harness, fixed_cases, leaves, make_settings, socket_pair

# -- building headers as HAProxy writes them ---------------------------------------------------


def v1(source: str, destination: str, sport: int = 56324, dport: int = 443) -> bytes:
    family = "TCP6" if ":" in source else "TCP4"
    return f"PROXY {family} {source} {destination} {sport} {dport}\r\n".encode()


def v2(
    source: str | None = None,
    destination: str = "10.0.0.2",
    *,
    command: int = 0x1,
    family: int | None = None,
    transport: int = 0x1,
    tlvs: bytes = b"",
    version: int = 2,
) -> bytes:
    block = b""
    if source is not None:
        src, dst = ipaddress.ip_address(source), ipaddress.ip_address(destination)
        if family is None:
            family = 0x1 if src.version == 4 else 0x2
        block = src.packed + dst.packed + struct.pack("!HH", 56324, 443)
    fam = (family or 0) << 4 | transport
    body = block + tlvs
    return V2_SIGNATURE + bytes([version << 4 | command, fam]) + struct.pack("!H", len(body)) + body


def read_exactly(stream: bytes) -> tuple[bytes, bytes]:
    """Feed ``stream`` to the parser as a socket would, in the sizes it asks for: (header, rest)."""
    data = b""
    while wanted := bytes_wanted(data):
        data += stream[len(data) : len(data) + wanted]
        if len(data) == len(stream) and bytes_wanted(data):
            raise ProxyHeaderError("ran out")
    return data, stream[len(data) :]


# -- the parser --------------------------------------------------------------------------------

VALID = [
    (v1("203.0.113.7", "10.0.0.2"), ProxyHeader(1, "203.0.113.7", 56324)),
    (v1("2001:db8::7", "2001:db8::2"), ProxyHeader(1, "2001:db8::7", 56324)),
    (b"PROXY UNKNOWN\r\n", ProxyHeader(1, None)),
    (b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n", ProxyHeader(1, None)),
    (v1("255.255.255.255", "255.255.255.255", 65535, 65535), ProxyHeader(1, "255.255.255.255", 65535)),
    (v2("203.0.113.7"), ProxyHeader(2, "203.0.113.7", 56324)),
    (v2("2001:db8::7", "2001:db8::2"), ProxyHeader(2, "2001:db8::7", 56324)),
    (v2("203.0.113.7", tlvs=b"\x01\x00\x08http/1.1\x04\x00\x01\x00"), ProxyHeader(2, "203.0.113.7", 56324)),
    (v2(command=0x0), ProxyHeader(2, None)),  # LOCAL: the proxy's own health check
    (v2("203.0.113.7", command=0x0), ProxyHeader(2, None)),  # LOCAL ignores any address block
    (v2(family=0x0, transport=0x0), ProxyHeader(2, None)),  # AF_UNSPEC
    (v2(family=0x3, tlvs=bytes(216)), ProxyHeader(2, None)),  # AF_UNIX: no IP to go by
]


@pytest.mark.parametrize(("header", "expected"), VALID)
def test_proxy_protocol_parses_what_haproxy_sends(header: bytes, expected: ProxyHeader) -> None:
    assert parse(header) == expected
    # Read the way the listener reads it, followed by a TLS ClientHello or an HTTP request.
    for rest in (b"", b"\x16\x03\x01\x02\x00\x01", b"GET /ws HTTP/1.1\r\n\r\n"):
        assert read_exactly(header + rest) == (header, rest)


MALFORMED = [
    (b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n", "not a PROXY protocol header"),
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\x00", "not a PROXY protocol header"),
    (b"PROXY TCP4 203.0.113.7 10.0.0.2 56324\r\n", "is not 'PROXY TCP4"),
    (b"PROXY TCP5 203.0.113.7 10.0.0.2 1 2\r\n", "is not 'PROXY TCP4"),
    (b"PROXY TCP4 203.0.113.7  10.0.0.2 1 2\r\n", "is not 'PROXY TCP4"),
    (b"PROXY TCP4 2001:db8::7 10.0.0.2 1 2\r\n", "is not an IPv4 address"),
    (b"PROXY TCP6 203.0.113.7 2001:db8::2 1 2\r\n", "is not an IPv6 address"),
    (b"PROXY TCP4 203.0.113.300 10.0.0.2 1 2\r\n", "is not an IPv4 address"),
    (b"PROXY TCP4 203.0.113.7 10.0.0.2 65536 2\r\n", "is not a port number"),
    (b"PROXY TCP4 203.0.113.7 10.0.0.2 080 2\r\n", "leading zero"),
    (b"PROXY TCP4 203.0.113.7 10.0.0.2 -1 2\r\n", "is not a port number"),
    (b"PROXY TCP4 203.0.113.7 10.0.0.2 1 2\r\r\n", "stray CR"),
    (b"PROXY TCP4 \xff.0.113.7 10.0.0.2 1 2\r\n", "not ASCII"),
    (b"PROXY " + b"1" * 120 + b"\r\n", "longer than 107 bytes"),
    (v2("203.0.113.7", version=1), "version 1"),
    (v2("203.0.113.7", command=0x2), "unknown command"),
    (v2("203.0.113.7", family=0x4), "unknown family"),
    (v2("203.0.113.7", transport=0x2), "datagram"),
    (v2("203.0.113.7", transport=0x3), "unknown family/transport"),
    (V2_SIGNATURE + b"\x21\x11\x00\x08" + bytes(8), "address block of 8 bytes, family 1 needs 12"),
    (V2_SIGNATURE + b"\x21\x21\x00\x0c" + bytes(12), "address block of 12 bytes, family 2 needs 36"),
]


@pytest.mark.parametrize(("data", "message"), MALFORMED)
def test_proxy_protocol_refuses_malformed_headers(data: bytes, message: str) -> None:
    with pytest.raises(ProxyHeaderError, match=message):
        parse(read_exactly(data)[0])


def test_proxy_protocol_refuses_at_the_first_byte_that_cannot_start_a_header() -> None:
    with pytest.raises(ProxyHeaderError):
        bytes_wanted(b"G")
    with pytest.raises(ProxyHeaderError):
        bytes_wanted(b"\r\n\r\n\x01")
    assert bytes_wanted(b"") == 12 and bytes_wanted(b"PROX") == 8 and bytes_wanted(V2_SIGNATURE[:5]) == 7


def test_proxy_protocol_refuses_an_incomplete_header() -> None:
    with pytest.raises(ProxyHeaderError, match="incomplete"):
        parse(v1("203.0.113.7", "10.0.0.2")[:-1])
    with pytest.raises(ProxyHeaderError, match="incomplete"):
        parse(v2("203.0.113.7")[:-1])


addresses = st.one_of(
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(str),
)


@fixed_cases(300)
@given(
    source=addresses,
    sport=st.integers(0, 65535),
    rest=st.binary(max_size=40),
    version=st.sampled_from([1, 2]),
)
def test_proxy_protocol_round_trips_any_address_and_never_reads_past_the_header(
    source: str, sport: int, rest: bytes, version: int
) -> None:
    destination = "10.0.0.2" if ":" not in source else "::1"
    header = v1(source, destination, sport) if version == 1 else v2(source, destination)
    assert read_exactly(header + rest) == (header, rest)
    parsed = parse(header)
    assert parsed.client == str(ipaddress.ip_address(source))


@fixed_cases(500)
@given(data=st.one_of(st.binary(max_size=120), st.binary(max_size=60).map(lambda b: b"PROXY " + b)))
def test_proxy_protocol_garbage_is_only_ever_a_proxy_header_error(data: bytes) -> None:
    with suppress(ProxyHeaderError):
        parse(read_exactly(data)[0])


# -- the listener ----------------------------------------------------------------------------

TRUSTED = ("10.0.0.0/8",)


@asynccontextmanager
async def behind_proxy(
    harness: Harness, preamble: bytes, remote: str = "10.0.0.1", path: str = "/ws"
) -> AsyncIterator[WebSocketConnection]:
    """A WebSocket from ``remote`` whose first bytes are ``preamble`` (a PROXY header)."""
    client, server = socket_pair()
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(harness.gateway.websocket.serve_stream, server, remote)
            await client.send_all(preamble)
            ws = await wrap_client_stream(nursery, client, "gateway.test", path)
            try:
                yield ws
            finally:
                nursery.cancel_scope.cancel()
    finally:
        await trio.aclose_forcefully(client)


def remotes(harness: Harness) -> set[str]:
    return {session.remote for session in harness.gateway.hub.sessions}


async def closed_without_answer(harness: Harness, data: bytes, remote: str = "10.0.0.1") -> bool:
    client, server = socket_pair()
    async with client, trio.open_nursery() as nursery:
        nursery.start_soon(harness.gateway.websocket.serve_stream, server, remote)
        await client.send_all(data)
        try:
            return await client.receive_some(65536) == b""
        except trio.BrokenResourceError:
            return True


async def test_proxy_protocol_names_the_client(nursery: trio.Nursery) -> None:
    settings = make_settings(proxy_protocol=True, trusted_proxies=TRUSTED)
    harness = await Harness(nursery, settings).start()
    with trio.fail_after(10):
        async with behind_proxy(harness, v1("203.0.113.7", "10.0.0.2")):
            assert remotes(harness) == {"203.0.113.7"}
            # v2, IPv6, and the HTTP request in the same write as the header: read exactly.
            async with behind_proxy(harness, v2("2001:db8::7", "2001:db8::2")):
                assert remotes(harness) == {"203.0.113.7", "2001:db8::7"}
                async with behind_proxy(harness, v2(command=0x0)):  # LOCAL: the proxy itself
                    assert "10.0.0.1" in remotes(harness)


async def test_proxy_protocol_per_address_limit_counts_the_client(nursery: trio.Nursery) -> None:
    from trio_websocket import ConnectionRejected

    settings = make_settings(proxy_protocol=True, trusted_proxies=TRUSTED, max_pending_per_ip=1)
    harness = await Harness(nursery, settings).start()
    with trio.fail_after(10):
        async with behind_proxy(harness, v1("203.0.113.7", "10.0.0.2")):
            statuses: list[int] = []
            try:
                async with behind_proxy(harness, v1("203.0.113.7", "10.0.0.2", sport=1)):
                    pass
            except* ConnectionRejected as group:
                statuses += [e.status_code for e in leaves(group, ConnectionRejected)]
            assert statuses == [429]
            async with behind_proxy(harness, v1("203.0.113.8", "10.0.0.2")):  # another client
                assert remotes(harness) == {"203.0.113.7", "203.0.113.8"}


async def test_proxy_protocol_missing_or_garbled_header_from_a_trusted_proxy_closes_with_a_log_line(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="gateway.edge")
    harness = await Harness(nursery, make_settings(proxy_protocol=True, trusted_proxies=TRUSTED)).start()
    with trio.fail_after(10):
        request = b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n"
        assert await closed_without_answer(harness, request)  # the proxy forgot send-proxy
        assert await closed_without_answer(harness, b"PROXY TCP4 1.2.3.4\r\n" + request)
    lines = [r.getMessage() for r in caplog.records if "trusted proxy 10.0.0.1" in r.getMessage()]
    assert len(lines) == 1 and "not a PROXY protocol header" in lines[0], lines  # once a minute
    refused = harness.gateway.metrics.connections_refused.labels("proxy_header")._value.get()
    assert refused == 2


async def test_proxy_protocol_header_from_an_untrusted_peer_is_not_believed(nursery: trio.Nursery) -> None:
    harness = await Harness(nursery, make_settings(proxy_protocol=True, trusted_proxies=TRUSTED)).start()
    with trio.fail_after(10):
        client, server = socket_pair()
        async with client, trio.open_nursery() as inner:
            inner.start_soon(harness.gateway.websocket.serve_stream, server, "198.51.100.9")
            await client.send_all(v1("203.0.113.7", "10.0.0.2") + b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = await client.receive_some(65536)
        assert answer.startswith(b"HTTP/1.1 400 ")  # read as HTTP, and not HTTP
        async with harness.connect(remote="198.51.100.9"):  # a plain connection from it works
            assert remotes(harness) == {"198.51.100.9"}


async def test_proxy_protocol_tcp_health_check_closes_quietly(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    harness = await Harness(nursery, make_settings(proxy_protocol=True, trusted_proxies=TRUSTED)).start()
    client, server = socket_pair()
    with trio.fail_after(10):
        async with trio.open_nursery() as inner:
            inner.start_soon(harness.gateway.websocket.serve_stream, server, "10.0.0.1")
            await client.aclose()  # connect, then close: what a TCP health check does
    assert not [r for r in caplog.records if r.name == "gateway.edge"]


async def test_proxy_protocol_header_then_tls(nursery: trio.Nursery, tmp_path: Path) -> None:
    """HAProxy in TCP mode with send-proxy-v2 in front of a TLS listener: header first, then TLS."""
    authority = Authority()
    issued = authority.issue(tmp_path)
    settings = make_settings(
        proxy_protocol=True,
        trusted_proxies=TRUSTED,
        tls_cert_file=str(issued.cert_file),
        tls_key_file=str(issued.key_file),
    )
    harness = await Harness(nursery, settings).start()
    client, server = trio.testing.memory_stream_pair()
    with trio.fail_after(10):
        async with trio.open_nursery() as inner:
            inner.start_soon(harness.gateway.websocket.serve_stream, server, "10.0.0.1")
            await client.send_all(v2("203.0.113.7"))
            tls = trio.SSLStream(client, authority.client_context(), server_hostname="127.0.0.1")
            ws = await wrap_client_stream(inner, cast(trio.SSLStream[trio.SocketStream], tls), "x", "/ws")
            assert remotes(harness) == {"203.0.113.7"}
            await ws.aclose()
