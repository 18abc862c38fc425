"""Session limits: each one answered with its SMTP code, over real sockets."""

from __future__ import annotations

import smtplib
import socket
import time

import pytest

from helpers import call, make_message, rule, rule_set, send, store, stored_messages

pytestmark = pytest.mark.e2e


def limited(write_config, serve, **limits):
    path = write_config(
        {
            "server": limits,
            "functions": {"slow": "handlers:slow"},
            "rule_set": rule_set(
                rule("slow", call("slow"), recipients=["slow@example.com"]),
                rule("all", store("inbound")),
            ),
        }
    )
    return serve(path)


def read_reply(sock: socket.socket, timeout: float = 10) -> bytes:
    """Read until a final reply line (or the connection closes)."""
    sock.settimeout(timeout)
    data = b""
    while True:
        chunk = sock.recv(4096)
        data += chunk
        lines = data.split(b"\r\n")
        if not chunk or any(len(line) > 3 and line[3:4] == b" " for line in lines):
            return data


def trickle(sock: socket.socket, data: bytes) -> bytes:
    """Send ``data`` a byte every 0.1 s; return the first reply, if any comes."""
    for byte in data:
        sock.sendall(bytes([byte]))
        sock.settimeout(0.1)
        try:
            return sock.recv(4096)
        except TimeoutError:
            continue
    return b""


def closed(sock: socket.socket, timeout: float = 10) -> bool:
    sock.settimeout(timeout)
    try:
        return sock.recv(4096) == b""
    except ConnectionResetError:
        return True


def test_sessions_past_the_limit_get_421_at_connect(write_config, serve):
    server = limited(write_config, serve, max_sessions=2)
    first = socket.create_connection(("127.0.0.1", server.port))
    second = socket.create_connection(("127.0.0.1", server.port))
    assert read_reply(first).startswith(b"220 ")
    assert read_reply(second).startswith(b"220 ")

    with socket.create_connection(("127.0.0.1", server.port)) as third:
        assert (
            read_reply(third) == b"421 4.7.0 Too many connections, try again later\r\n"
        )
        assert closed(third)

    first.close()
    second.close()
    time.sleep(0.2)  # the server sees both closes
    assert send(server.port, make_message()).code == 250


def test_an_idle_client_is_cut_off_with_421(write_config, serve):
    server = limited(write_config, serve, command_timeout=0.5)
    with socket.create_connection(("127.0.0.1", server.port)) as client:
        read_reply(client)
        started = time.monotonic()
        assert read_reply(client) == b"421 4.4.2 Timeout, closing connection\r\n"
        assert 0.4 < time.monotonic() - started < 5
        assert closed(client)


def test_a_command_trickled_a_byte_at_a_time_is_cut_off(write_config, serve):
    """The limit is for the whole command, not for each byte."""
    server = limited(write_config, serve, command_timeout=0.6)
    with socket.create_connection(("127.0.0.1", server.port)) as client:
        read_reply(client)
        started = time.monotonic()
        reply = trickle(client, b"EHLO trickle.example.com\r\n")
        assert reply == b"421 4.4.2 Timeout, closing connection\r\n"
        assert time.monotonic() - started < 2.0


def test_a_trickled_message_is_cut_off_and_not_stored(write_config, serve, tmp_path):
    server = limited(write_config, serve, data_timeout=1.0)
    with socket.create_connection(("127.0.0.1", server.port)) as client:
        read_reply(client)
        for command in (b"EHLO c.example", b"MAIL FROM:<a@b.example>"):
            client.sendall(command + b"\r\n")
            read_reply(client)
        client.sendall(b"RCPT TO:<bob@example.com>\r\n")
        assert read_reply(client).startswith(b"250")
        client.sendall(b"DATA\r\n")
        assert read_reply(client).startswith(b"354")

        started = time.monotonic()
        reply = trickle(client, make_message())
        assert reply == b"421 4.4.2 Timeout, closing connection\r\n"
        assert time.monotonic() - started < 3
    assert stored_messages(tmp_path / "data" / "s3" / "inbound") == []


def test_processing_time_does_not_count_against_the_client(write_config, serve):
    """A 1.5 s RequestResponse handler with a 0.5 s command limit still replies."""
    path = write_config(
        {
            "server": {"command_timeout": 0.5, "data_timeout": 0.5},
            "functions": {"slow": "handlers:slow"},
            "rule_set": rule_set(rule("slow", call("slow", "RequestResponse"))),
        }
    )
    server = serve(path)
    with smtplib.SMTP("127.0.0.1", server.port, timeout=30) as client:
        client.ehlo("c.example")
        client.mail("a@b.example")
        client.rcpt("bob@example.com")
        code, _ = client.data(make_message())
        assert code == 250
        # The client's clock runs again after the reply.
        assert client.noop()[0] == 250


def test_recipients_past_the_limit_get_452(write_config, serve, tmp_path):
    server = limited(write_config, serve, max_recipients=3)
    rcpts = [f"user{n}@example.com" for n in range(5)]
    sent = send(server.port, make_message(), rcpts)

    assert [sent.rcpt[r][0] for r in rcpts] == [250, 250, 250, 452, 452]
    assert sent.rcpt[rcpts[3]][1] == "4.5.3 Too many recipients"
    assert sent.code == 250
    (path,) = stored_messages(tmp_path / "data" / "s3" / "inbound")
    assert b"for user0@example.com" in path.read_bytes()


def test_a_header_block_past_the_limit_gets_552(write_config, serve, tmp_path):
    server = limited(write_config, serve, max_header_size=1500)
    big = make_message(extra=(("X-Filler", "x" * 900), ("X-More", "y" * 900)))
    small = make_message(extra=(("X-Filler", "x" * 900),))

    refused = send(server.port, big)
    assert refused.data == (552, "5.3.4 Message header too large")
    assert send(server.port, small).code == 250
    assert len(stored_messages(tmp_path / "data" / "s3" / "inbound")) == 1


@pytest.mark.parametrize(
    "message",
    [
        b"\r\n" + b"a body line and no empty line\r\n" * 100,  # no header
        b"Subject: x\r\n" + b"a body line and no empty line\r\n" * 100,
    ],
    ids=["starts-with-the-empty-line", "no-empty-line"],
)
def test_a_small_header_over_a_large_body_is_stored(
    write_config, serve, tmp_path, message
):
    """Without the empty line, the header ends at the first line that is not
    a field: a malformed message is stored, not refused as all header."""
    server = limited(write_config, serve, max_header_size=1500)

    sent = send(server.port, message)

    assert sent.code == 250, sent.data
    (path,) = stored_messages(tmp_path / "data" / "s3" / "inbound")
    assert path.read_bytes().endswith(message)


@pytest.mark.parametrize(
    ("key", "value", "problem"),
    [
        ("max_sessions", 0, "expected an integer of at least 1"),
        ("command_timeout", 0, "expected a number above 0"),
        ("data_timeout", "soon", "expected an integer or a number"),
        ("max_recipients", -1, "at least 1"),
    ],
)
def test_bad_limits_name_their_key(write_config, key, value, problem):
    from sesrx.errors import ConfigError
    from sesrx.loader import load_config

    path = write_config({"server": {key: value}, "rule_set": rule_set()})
    with pytest.raises(ConfigError, match=rf"server\.{key}: .*{problem}"):
        load_config(path)
