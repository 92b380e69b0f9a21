"""The client's address behind trusted proxies: ``X-Forwarded-For`` and ``Forwarded`` (RFC 7239)
read from the right, believed only from ``trusted_proxies`` and only in the header the proxies set;
what the listener then goes by (per-address limits, the session's address in logs)."""

from __future__ import annotations

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from gateway.config import ConfigError, load
from gateway.edge.proxies import (
    FORWARDED,
    X_FORWARDED_FOR,
    TrustedProxies,
    canonical,
    forwarded_client,
    forwarded_for,
    parse_network,
    x_forwarded_for,
)
from tests.helpers import Harness, fixed_cases, make_settings

PROXIES = TrustedProxies.parse(["10.0.0.0/8", "fd00::/8", "192.0.2.1"])


@pytest.mark.parametrize(
    ("value", "hops"),
    [
        ("203.0.113.7", ["203.0.113.7"]),
        ("203.0.113.7, 10.0.0.1", ["203.0.113.7", "10.0.0.1"]),
        ("203.0.113.7:41234,[2001:db8::1]:80 , 2001:DB8::2", ["203.0.113.7", "2001:db8::1", "2001:db8::2"]),
        ("::ffff:203.0.113.7", ["203.0.113.7"]),  # a dual-stack proxy's view of an IPv4 client
        ("unknown, 203.0.113.7", [None, "203.0.113.7"]),
        ("203.0.113.7:http, [2001:db8::1", [None, None]),
        ("", [None]),
    ],
)
def test_proxies_x_forwarded_for_lists_addresses(value: str, hops: list[str | None]) -> None:
    assert x_forwarded_for(value) == hops


@pytest.mark.parametrize(
    ("value", "hops"),
    [
        # The examples of RFC 7239 section 4 and 7.
        ('for="_gazonk"', [None]),
        ('For="[2001:db8:cafe::17]:4711"', ["2001:db8:cafe::17"]),
        ("for=192.0.2.60;proto=http;by=203.0.113.43", ["192.0.2.60"]),
        ("for=192.0.2.43, for=198.51.100.17", ["192.0.2.43", "198.51.100.17"]),
        ("for=unknown, for=198.51.100.17;by=10.0.0.1", [None, "198.51.100.17"]),
        ('proto=https;host="a,b"', [None]),  # no for=; the comma inside quotes is no separator
        ('for="198.51.100.17";host="x\\";for=1.2.3.4"', ["198.51.100.17"]),
        ("for=", [None]),
    ],
)
def test_proxies_forwarded_lists_for_nodes(value: str, hops: list[str | None]) -> None:
    assert forwarded_for(value) == hops


def headers(*pairs: tuple[str, str]) -> list[tuple[bytes, bytes]]:
    return [(name.encode(), value.encode()) for name, value in pairs]


XFF = X_FORWARDED_FOR


@pytest.mark.parametrize(
    ("peer", "request_headers", "header", "client"),
    [
        # From anyone else, the headers are ignored.
        ("198.51.100.9", headers((XFF, "203.0.113.7")), XFF, "198.51.100.9"),
        # From a trusted proxy: the address it saw.
        ("10.0.0.1", headers((XFF, "203.0.113.7")), XFF, "203.0.113.7"),
        # What the client wrote to the left of it is ignored (a spoofing attempt).
        ("10.0.0.1", headers((XFF, "1.1.1.1, 203.0.113.7")), XFF, "203.0.113.7"),
        # A chain of trusted proxies is walked through.
        ("10.0.0.1", headers((XFF, "1.1.1.1, 203.0.113.7, 10.0.0.5, 192.0.2.1")), XFF, "203.0.113.7"),
        # Every hop trusted: the farthest one.
        ("10.0.0.1", headers((XFF, "10.0.0.3, 10.0.0.2")), XFF, "10.0.0.3"),
        # Several header lines are one list, in order.
        ("10.0.0.1", headers((XFF, "1.1.1.1"), (XFF, "203.0.113.7")), XFF, "203.0.113.7"),
        # An unknown hop: the nearest address known.
        ("10.0.0.1", headers((XFF, "203.0.113.7, unknown, 10.0.0.2")), XFF, "10.0.0.2"),
        ("10.0.0.1", headers((XFF, "garbage")), XFF, "10.0.0.1"),
        # A trusted proxy that sent no header: itself (its health checks).
        ("10.0.0.1", [], XFF, "10.0.0.1"),
        # The peer seen through a dual-stack socket is matched as IPv4.
        ("::ffff:10.0.0.1", headers((XFF, "203.0.113.7")), XFF, "203.0.113.7"),
        ("fd00::1", headers((XFF, "2001:db8::7")), XFF, "2001:db8::7"),
        # Only the header the proxies set is read: the other one passes through them untouched.
        ("10.0.0.1", headers(("forwarded", "for=1.1.1.1"), (XFF, "203.0.113.7")), XFF, "203.0.113.7"),
        ("10.0.0.1", headers(("forwarded", "for=1.1.1.1")), XFF, "10.0.0.1"),
        ("10.0.0.1", headers((XFF, "1.1.1.1"), ("forwarded", "for=203.0.113.7")), FORWARDED, "203.0.113.7"),
        ("10.0.0.1", headers(("forwarded", 'for=1.1.1.1, for="[2001:db8::7]:1"')), FORWARDED, "2001:db8::7"),
        # A quote a client left open swallows nothing a proxy appended on a line of its own.
        ("10.0.0.1", headers(("forwarded", 'for="1.1.1.1'), ("forwarded", "for=203.0.113.7")), FORWARDED,
         "203.0.113.7"),
    ],
)  # fmt: skip
def test_proxies_client_is_the_rightmost_untrusted_address(
    peer: str, request_headers: list[tuple[bytes, bytes]], header: str, client: str
) -> None:
    assert canonical(forwarded_client(canonical(peer), request_headers, PROXIES, header)) == client


@fixed_cases(300)
@given(
    forged=st.lists(st.one_of(st.ip_addresses().map(str), st.text(max_size=12)), max_size=4),
    client=st.ip_addresses(v=4).filter(lambda a: not PROXIES.trusts(str(a))).map(str),
    header=st.sampled_from([X_FORWARDED_FOR, FORWARDED]),
)
def test_proxies_nothing_a_client_writes_changes_its_address(
    forged: list[str], client: str, header: str
) -> None:
    """Whatever the client puts in the header, the address its trusted proxy appends wins."""
    if header == FORWARDED:
        line = ", ".join(f"for={f!r}" for f in forged)
        appended = f"for={client}"
    else:
        line, appended = ", ".join(forged), client
    lines = [(header.encode(), line.encode("utf-8", "replace"))] if forged else []
    lines.append((header.encode(), appended.encode()))
    assert forwarded_client("10.0.0.1", lines, PROXIES, header) == client


def test_proxies_networks_are_checked() -> None:
    assert parse_network("10.0.0.1") == parse_network("10.0.0.1/32")
    with pytest.raises(ValueError, match=r"host bits set: did you mean 10\.0\.0\.0/8"):
        parse_network("10.0.0.1/8")
    with pytest.raises(ValueError, match="not an IP address or a CIDR"):
        parse_network("proxy.example.com")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"GATEWAY_TRUSTED_PROXIES": "10.0.0.0/8,10.1.0.1/16"},
            "trusted_proxies: '10.1.0.1/16' has host bits",
        ),
        ({"GATEWAY_TRUSTED_PROXIES": "localhost"}, "trusted_proxies: 'localhost' is not an IP"),
        ({"GATEWAY_PROXY_PROTOCOL": "true"}, "proxy_protocol expects the PROXY header from trusted_proxies"),
        ({"GATEWAY_FORWARDED_HEADER": "x-real-ip"}, "forwarded_header must be x-forwarded-for or forwarded"),
    ],
)
def test_proxies_settings_errors(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load(env=env)


# -- the listener ----------------------------------------------------------------------------


def remotes(harness: Harness) -> list[str]:
    return sorted(session.remote for session in harness.gateway.hub.sessions)


def forwarded_for_header(address: str) -> list[tuple[bytes, bytes]]:
    return [(b"X-Forwarded-For", address.encode())]


async def test_proxies_listener_goes_by_the_forwarded_client(nursery: trio.Nursery) -> None:
    settings = make_settings(trusted_proxies=("10.0.0.0/8",), max_pending_per_ip=1)
    harness = await Harness(nursery, settings).start()
    with trio.fail_after(10):
        async with harness.connect(headers=forwarded_for_header("203.0.113.7"), remote="10.0.0.1"):
            assert remotes(harness) == ["203.0.113.7"]
            # The per-address limit counts the client: the same client through the same proxy is
            # refused, another client through it is not.
            refused = await harness.refusal(
                headers=forwarded_for_header("1.1.1.1, 203.0.113.7"), remote="10.0.0.1"
            )
            assert refused.status_code == 429
            async with harness.connect(headers=forwarded_for_header("203.0.113.8"), remote="10.0.0.1"):
                assert remotes(harness) == ["203.0.113.7", "203.0.113.8"]


async def test_proxies_listener_ignores_headers_from_untrusted_peers(nursery: trio.Nursery) -> None:
    harness = await Harness(nursery, make_settings(trusted_proxies=("10.0.0.0/8",))).start()
    with trio.fail_after(10):
        async with harness.connect(headers=forwarded_for_header("10.0.0.9"), remote="198.51.100.9"):
            assert remotes(harness) == ["198.51.100.9"]


async def test_proxies_listener_trusts_nobody_by_default(nursery: trio.Nursery) -> None:
    harness = await Harness(nursery, make_settings()).start()
    with trio.fail_after(10):
        async with harness.connect(headers=forwarded_for_header("203.0.113.7"), remote="127.0.0.1"):
            assert remotes(harness) == ["127.0.0.1"]
