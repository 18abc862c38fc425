"""Receipt IP filters: Allow beats Block, refusal at connection time."""

from __future__ import annotations

import ipaddress
import socket

import pytest

from sesrx.config import IpFilter
from sesrx.ip_filters import is_blocked

from helpers import make_message, rule, rule_set, send, store


def ip_filter(policy: str, cidr: str, name: str = "f") -> IpFilter:
    return IpFilter(name, policy, ipaddress.ip_network(cidr, strict=False))


EVERYTHING = ip_filter("Block", "0.0.0.0/0")


@pytest.mark.parametrize(
    ("filters", "address", "blocked"),
    [
        ((), "10.0.0.1", False),
        ((ip_filter("Block", "10.0.0.0/8"),), "10.1.2.3", True),
        ((ip_filter("Block", "10.0.0.0/8"),), "11.1.2.3", False),
        ((EVERYTHING, ip_filter("Allow", "192.0.2.7")), "192.0.2.7", False),
        ((ip_filter("Allow", "192.0.2.0/24"), EVERYTHING), "198.51.100.1", True),
        ((ip_filter("Block", "2001:db8::/32"),), "2001:db8::1", True),
        ((ip_filter("Block", "2001:db8::/32"),), "10.0.0.1", False),
        ((ip_filter("Block", "127.0.0.0/8"),), "::ffff:127.0.0.1", True),
        ((ip_filter("Allow", "10.0.0.0/8"),), "10.0.0.1", False),
    ],
)
def test_allow_wins_over_block(filters, address, blocked):
    """A client is refused when a Block filter matches and no Allow filter does."""
    assert is_blocked(filters, address) is blocked


@pytest.mark.e2e
def test_blocked_client_gets_554_and_nothing_else(write_config, serve, tmp_path):
    """A blocked client is refused before the greeting; an allowed one is served."""
    blocking = write_config(
        {
            "ip_filters": [{"name": "all", "policy": "Block", "cidr": "0.0.0.0/0"}],
            "rule_set": rule_set(rule("store", store("inbound"))),
        }
    )
    server = serve(blocking)

    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as conn:
        received = conn.makefile("rb").read()

    assert received == b"554 5.7.1 Access denied\r\n"


@pytest.mark.e2e
def test_allowed_client_is_served(write_config, serve, tmp_path):
    """An Allow filter for the client lets it through a block-everything filter."""
    config = write_config(
        {
            "ip_filters": [
                {"name": "all", "policy": "Block", "cidr": "0.0.0.0/0"},
                {"name": "me", "policy": "Allow", "cidr": "127.0.0.1"},
            ],
            "rule_set": rule_set(rule("store", store("inbound"))),
        }
    )
    server = serve(config)

    assert send(server.port, make_message()).code == 250
