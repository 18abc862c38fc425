"""PROXY protocol: the client address a load balancer or a test poses as."""

from __future__ import annotations

import socket

import pytest

from helpers import make_message, read_trace, rule, rule_set, store

pytestmark = pytest.mark.e2e


def converse(port: int, client_ip: str) -> list[bytes]:
    """Send a PROXY v1 header and one message; return every reply line."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(f"PROXY TCP4 {client_ip} 127.0.0.1 40000 25\r\n".encode())
        replies = conn.makefile("rb")
        lines = [replies.readline()]
        if not lines[0].startswith(b"220"):
            return lines
        for command in (b"HELO proxied.example", b"MAIL FROM:<a@sender.example>",
                        b"RCPT TO:<b@example.com>", b"DATA"):  # fmt: skip
            conn.sendall(command + b"\r\n")
            lines.append(replies.readline())
        conn.sendall(make_message() + b".\r\n")
        lines.append(replies.readline())
    return lines


def test_proxy_header_sets_the_client_address(write_config, serve, tmp_path):
    """The address in the PROXY header is the one traced and put in Received."""
    config = write_config(
        {
            "server": {"proxy_protocol": True},
            "rule_set": rule_set(rule("r", store("inbound"))),
        }
    )
    server = serve(config)

    lines = converse(server.port, "198.51.100.7")
    message_id = lines[-1].split()[-1].decode()
    stored = (tmp_path / "data" / "s3" / "inbound" / message_id).read_bytes()

    assert (
        read_trace(tmp_path / "data", message_id)["envelope"]["peer"] == "198.51.100.7"
    )
    assert b"(proxied.example [198.51.100.7])" in stored


def test_ip_filters_apply_to_the_proxied_address(write_config, serve):
    """A blocked address behind the proxy gets 554; an allowed one is served."""
    config = write_config(
        {
            "server": {"proxy_protocol": True},
            "ip_filters": [
                {"name": "bad", "policy": "Block", "cidr": "203.0.113.0/24"}
            ],
            "rule_set": rule_set(rule("r", store("inbound"))),
        }
    )
    server = serve(config)

    assert converse(server.port, "203.0.113.9") == [b"554 5.7.1 Access denied\r\n"]
    assert converse(server.port, "198.51.100.7")[-1].startswith(b"250 OK ")
