"""The key per-address limits count by: an IPv4 address, or the prefix of an IPv6 one. Pure.

One IPv6 host usually holds a whole /64 (and picks a fresh address in it at will, RFC 8981), so
counting by the full address would give it as many budgets as it wants; an IPv4-mapped address
(``::ffff:192.0.2.1``, a dual-stack listener) is its IPv4 address.
"""

from __future__ import annotations

import ipaddress


def address_key(address: str, ipv6_prefix_length: int) -> str:
    """``192.0.2.1`` as is, ``2001:db8::1`` as ``2001:db8::/64``; anything else (a non-IP peer
    such as an in-memory stream) as is."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, ipv6_prefix_length), strict=False))
    return str(ip)
