"""gateway.http.clientaddr: the client behind trusted proxies, and IPv6 grouped by /64."""

from __future__ import annotations

from gateway.http.clientaddr import client_address, rate_key


def test_without_trusted_proxies_the_header_is_ignored() -> None:
    assert client_address("198.51.100.9", ["1.2.3.4"], 0) == "198.51.100.9"
    assert client_address("198.51.100.9", [], 0) == "198.51.100.9"
    assert client_address(None, [], 0) == "unknown"


def test_the_rightmost_untrusted_hop_is_the_client() -> None:
    # The client wrote "6.6.6.6"; our proxy (the peer, 10.0.0.2) appended 203.0.113.7.
    assert client_address("10.0.0.2", ["6.6.6.6, 203.0.113.7"], 1) == "203.0.113.7"
    # Two proxies: the outer one (10.0.0.1) appended the client, the inner one itself.
    assert client_address("10.0.0.2", ["6.6.6.6, 203.0.113.7, 10.0.0.1"], 2) == "203.0.113.7"
    # Several header lines are one list, in order.
    assert client_address("10.0.0.2", ["6.6.6.6", "203.0.113.7"], 1) == "203.0.113.7"
    # A request that bypassed the proxies: the furthest address known.
    assert client_address("203.0.113.7", [], 1) == "203.0.113.7"
    assert client_address("10.0.0.2", ["203.0.113.7"], 3) == "203.0.113.7"
    assert client_address("10.0.0.2", [" , 203.0.113.7 ,"], 1) == "203.0.113.7"


def test_ipv6_is_grouped_by_64() -> None:
    a = rate_key("2001:db8:1:2::1")
    assert a == rate_key("2001:db8:1:2:ffff:ffff:ffff:ffff") == "2001:db8:1:2::/64"
    assert a != rate_key("2001:db8:1:3::1")
    assert rate_key("[2001:db8:1:2::5]:443") == a
    assert rate_key("fe80::1%eth0") == "fe80::/64"
    assert rate_key("::ffff:192.0.2.1") == "192.0.2.1"
    assert rate_key("192.0.2.1") == "192.0.2.1" != rate_key("192.0.2.2")
    assert rate_key("192.0.2.1:8080") == "192.0.2.1"
    assert rate_key("not an address") == "?not an address"
    assert len(rate_key("x" * 10_000)) <= 65
