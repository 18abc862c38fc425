"""PROXY protocol: the client address a load balancer or a test poses as."""

from __future__ import annotations

import socket

import pytest

from helpers import make_message, read_trace, rule, rule_set, store

pytestmark = pytest.mark.e2e


def converse(port: int, client_ip: str = "", header: bytes = b"") -> list[bytes]:
    """Send a PROXY header (v1 for ``client_ip``) and one message; return
    every reply line."""
    header = header or f"PROXY TCP4 {client_ip} 127.0.0.1 40000 25\r\n".encode()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(header)
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


# Version 2 (section 2.2 of the PROXY protocol): signature, then version 2
# with command PROXY, then family and transport.
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def test_a_unix_socket_client_keeps_the_connection_address(
    write_config, serve, tmp_path
):
    """A v2 header for a client on a Unix socket names no IP address: the
    connection's own address is traced and put in Received, not the path."""
    config = write_config(
        {
            "server": {"proxy_protocol": True},
            "rule_set": rule_set(rule("r", store("inbound"))),
        }
    )
    server = serve(config)
    addresses = b"/run/client.sock".ljust(108, b"\x00") + b"/run/sesrx".ljust(
        108, b"\x00"
    )
    header = V2_SIGNATURE + b"\x21\x31" + len(addresses).to_bytes(2, "big") + addresses

    lines = converse(server.port, header=header)
    message_id = lines[-1].split()[-1].decode()
    stored = (tmp_path / "data" / "s3" / "inbound" / message_id).read_bytes()

    assert read_trace(tmp_path / "data", message_id)["envelope"]["peer"] == "127.0.0.1"
    assert b"(proxied.example [127.0.0.1])" in stored
