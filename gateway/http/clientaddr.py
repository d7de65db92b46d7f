"""Who is asking, for rate limits: the client's address behind a known number of proxies,
grouped as one network would hand addresses out (pure).

X-Forwarded-For is a list each proxy appends its peer to; everything left of what our
own proxies wrote is whatever the client sent, so only the rightmost untrusted hop is
the client. With no trusted proxies the socket peer is the client and the header is
ignored. IPv6 clients are grouped by /64: one end site gets a whole /64, and rotating
addresses inside it must not buy a fresh bucket each time.
"""

from __future__ import annotations

import ipaddress

__all__ = ["client_address", "rate_key"]


def client_address(peer: str | None, forwarded_for: list[str], trusted_proxies: int) -> str:
    """The client's address: the socket `peer` when no proxy is trusted, else the hop
    `trusted_proxies` places left of the peer in X-Forwarded-For (all header values,
    in order). A chain shorter than that (a request that bypassed a proxy) yields its
    leftmost hop, the furthest address known."""
    hops = [hop.strip() for value in forwarded_for for hop in value.split(",")]
    chain = [hop for hop in hops if hop] + [peer or "unknown"]
    if trusted_proxies <= 0:
        return chain[-1]
    return chain[max(0, len(chain) - 1 - trusted_proxies)]


def _parse(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = text.strip()
    if text.startswith("["):  # "[2001:db8::1]:443"
        text = text[1:].split("]", 1)[0]
    elif text.count(":") == 1:  # "192.0.2.1:443"
        text = text.split(":", 1)[0]
    try:
        return ipaddress.ip_address(text.split("%", 1)[0])  # no zone ids
    except ValueError:
        return None


def rate_key(address: str) -> str:
    """The limiter's key for an address: IPv4 as is, IPv6 by its /64 (IPv4-mapped IPv6 as
    the IPv4 address); anything that is not an address, as (bounded) text."""
    ip = _parse(address)
    if ip is None:
        return "?" + address[:64]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)
