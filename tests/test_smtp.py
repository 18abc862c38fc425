"""The SMTP conversation, seen from a real client on a loopback port."""

from __future__ import annotations

import json
import re
import shutil
import smtplib
import socket
import struct
import time
import urllib.request

import pytest
from loadgen import ServerProcess

from helpers import (
    call,
    make_message,
    read_trace,
    rule,
    rule_set,
    send,
    store,
    stored_messages,
)

pytestmark = pytest.mark.e2e

STORE = rule("store", store("inbound"))


def test_accepted_message_gets_a_ses_style_id(write_config, serve, tmp_path):
    """DATA is answered "250 OK <id>" with 40 base32hex characters ending in 1."""
    server = serve(write_config({"rule_set": rule_set(STORE)}))

    sent = send(server.port, make_message())

    assert sent.rcpt["bob@example.com"] == (250, "Ok")
    assert sent.data is not None
    assert sent.data[1].startswith("OK ")
    assert re.fullmatch(r"[0-9a-v]{38}[08go]1", sent.message_id)
    assert (tmp_path / "data" / "s3" / "inbound" / sent.message_id).is_file()


def test_banner_names_the_configured_host(write_config, serve):
    """The greeting reads like SES's: host name, then "ESMTP Amazon SES"."""
    config = write_config(
        {"server": {"hostname": "mx.test"}, "rule_set": rule_set(STORE)}
    )
    server = serve(config)

    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as conn:
        banner = conn.makefile("rb").readline()

    assert banner == b"220 mx.test ESMTP Amazon SES\r\n"


def test_unmatched_and_unverified_recipients_get_550(write_config, serve):
    """Recipients no enabled rule covers, or outside verified domains, are refused."""
    config = write_config(
        {
            "verified_domains": ["example.com"],
            "rule_set": rule_set(
                rule("sales", store("box1"), recipients=["sales@example.com"]),
                {
                    "name": "off",
                    "enabled": False,
                    "recipients": ["off@example.com"],
                    "actions": [store("box1")],
                },
                rule("other", store("box1"), recipients=["other.test"]),
            ),
        }
    )
    server = serve(config)

    sent = send(
        server.port,
        make_message(),
        rcpt_tos=[
            "sales@example.com",
            "SALES@EXAMPLE.COM",
            "off@example.com",
            "x@other.test",
            "not-an-address",
            "someone@example.com",
        ],
    )

    refusal = (550, "5.1.1 Requested action not taken: mailbox unavailable")
    assert sent.rcpt["sales@example.com"] == (250, "Ok")
    assert sent.rcpt["SALES@EXAMPLE.COM"] == (250, "Ok")
    for address in (
        "off@example.com",
        "x@other.test",
        "not-an-address",
        "someone@example.com",
    ):
        assert sent.rcpt[address] == refusal, address
    assert sent.code == 250


def test_tls_required_recipient_is_refused_on_a_plain_session(write_config, serve):
    """A rule with tls_policy Require refuses its recipients without STARTTLS."""
    config = write_config(
        {
            "rule_set": rule_set(
                {
                    "name": "secure",
                    "recipients": ["vault@example.com"],
                    "tls_policy": "Require",
                    "actions": [store("box1")],
                },
                STORE,
            )
        }
    )
    server = serve(config)

    sent = send(
        server.port, make_message(), rcpt_tos=["vault@example.com", "bob@example.com"]
    )

    assert sent.rcpt["vault@example.com"] == (550, "5.7.1 TLS required by recipient")
    assert sent.rcpt["bob@example.com"] == (250, "Ok")


def test_no_accepted_recipient_means_no_data(write_config, serve):
    """DATA after only refused recipients is an error, and nothing is stored."""
    server = serve(
        write_config({"verified_domains": ["example.com"], "rule_set": rule_set(STORE)})
    )

    with smtplib.SMTP("127.0.0.1", server.port) as client:
        client.ehlo("client.example")
        client.mail("a@sender.example")
        assert client.rcpt("x@elsewhere.test")[0] == 550
        code, _ = client.docmd("DATA")
    assert code == 503


def test_stored_object_is_ses_headers_then_the_bytes_received(
    write_config, serve, tmp_path
):
    """The object is Return-Path and Received, then the message byte for byte."""
    server = serve(
        write_config(
            {"server": {"hostname": "inbound.test"}, "rule_set": rule_set(STORE)}
        )
    )
    message = make_message(
        body="caf\xe9 \u2603\r\nline two", extra=(("X-Odd", "\t tabbed"),)
    )

    sent = send(server.port, message, mail_from="bounce+x@sender.example")
    stored = (tmp_path / "data" / "s3" / "inbound" / sent.message_id).read_bytes()

    head, _, rest = stored.partition(b"\r\n\r\n")
    assert stored.endswith(message)
    lines = stored[: len(stored) - len(message)].decode().split("\r\n")
    assert lines[0] == "Return-Path: <bounce+x@sender.example>"
    assert lines[1] == "Received: from client.example (client.example [127.0.0.1])"
    assert lines[2] == f" by inbound.test with SMTP id {sent.message_id}"
    assert lines[3] == " for bob@example.com;"
    assert re.fullmatch(
        r" \w{3}, \d{2} \w{3} \d{4} \d\d:\d\d:\d\d \+0000 \(UTC\)", lines[4]
    )


def test_null_sender_is_accepted(write_config, serve, tmp_path):
    """MAIL FROM:<> (a bounce) is accepted and stored with an empty Return-Path."""
    server = serve(write_config({"rule_set": rule_set(STORE)}))

    sent = send(server.port, make_message(), mail_from="")
    stored = (tmp_path / "data" / "s3" / "inbound" / sent.message_id).read_bytes()

    assert stored.startswith(b"Return-Path: <>\r\n")


def test_each_rule_sees_only_the_recipients_it_matches(write_config, serve, tmp_path):
    """A message keeps its accepted recipients; each rule gets its own subset."""
    config = write_config(
        {
            "rule_set": rule_set(
                rule(
                    "sales",
                    call("handlers:record", "RequestResponse"),
                    recipients=["sales@example.com"],
                ),
                rule(
                    "domain", store("all"), recipients=["example.com", ".example.org"]
                ),
            )
        }
    )
    server = serve(config)

    sent = send(
        server.port,
        make_message(),
        rcpt_tos=[
            "sales@example.com",
            "ops@example.com",
            "a@sub.example.org",
            "b@example.org",
        ],
    )
    trace = read_trace(tmp_path / "data", sent.message_id)

    assert sent.rcpt["b@example.org"][0] == 550
    assert trace["envelope"]["rcpt_tos"] == [
        "sales@example.com",
        "ops@example.com",
        "a@sub.example.org",
    ]
    sales, domain = trace["rules"]
    assert sales["recipients"] == ["sales@example.com"]
    assert domain["recipients"] == [
        "sales@example.com",
        "ops@example.com",
        "a@sub.example.org",
    ]


def test_failed_write_answers_451_and_leaves_nothing(write_config, serve, tmp_path):
    """When the bucket folder cannot be written the sender is told to retry."""
    store_then_tag = rule(
        "first",
        store("inbound"),
        {"add_header": {"header_name": "X-A", "header_value": "b"}},
    )
    server = serve(write_config({"rule_set": rule_set(store_then_tag, STORE)}))
    bucket = tmp_path / "data" / "s3" / "inbound"
    shutil.rmtree(bucket)
    bucket.write_text("a file where a folder goes")

    sent = send(server.port, make_message())

    assert sent.data is not None
    assert sent.data[0] == 451
    assert sent.data[1].startswith("4.3.0 ")
    assert list((tmp_path / "data" / ".tmp").iterdir()) == []
    [trace_path] = (tmp_path / "data" / "traces").iterdir()
    trace = json.loads(trace_path.read_text())
    assert trace["reply"].startswith("451 4.3.0 ")
    assert "cannot write" in trace["error"]
    first, second = trace["rules"]
    assert [a["outcome"] for a in first["actions"]] == ["error", "not reached"]
    assert (second["status"], second["actions"][0]["outcome"]) == (
        "not reached",
        "not run",
    )


def test_refusals_are_logged_with_their_reason(write_config, serve, caplog):
    """The log says why a recipient was refused: domain, rule or TLS."""
    config = write_config(
        {
            "verified_domains": ["example.com"],
            "rule_set": rule_set(
                rule("sales", store("box1"), recipients=["sales@example.com"]),
                rule(
                    "vault",
                    store("box1"),
                    recipients=["vault@example.com"],
                    tls_policy="Require",
                ),
            ),
        }
    )
    server = serve(config)
    caplog.set_level("INFO", logger="sesrx.smtp")

    send(
        server.port,
        make_message(),
        rcpt_tos=["a@example.org", "bob@example.com", "vault@example.com"],
    )

    text = caplog.text
    assert "RCPT TO:<a@example.org>: its domain is not in verified_domains" in text
    assert "RCPT TO:<bob@example.com>: no enabled rule matches it" in text
    assert "RCPT TO:<vault@example.com>: a matching rule has tls_policy Require" in text


@pytest.mark.parametrize(
    ("ehlo", "name"),
    [
        (b"evil\rX-SES-Spam-Verdict: PASS\rX-Injected: yes", "evil"),
        (b"a by b for c; d", "a"),
        (b"[127.0.0.1]", "[127.0.0.1]"),
        (b"a(b)c", "abc"),
        (b"h" * 500, "h" * 255),
    ],
)
def test_ehlo_text_cannot_reach_the_headers(write_config, serve, tmp_path, ehlo, name):
    """Only the first printable token of EHLO goes into the Received header."""
    server = serve(write_config({"rule_set": rule_set(STORE)}))

    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as conn:
        replies = conn.makefile("rb")
        replies.readline()
        conn.sendall(b"EHLO " + ehlo + b"\r\n")
        while not replies.readline().startswith(b"250 "):
            pass
        for command in (b"MAIL FROM:<a@sender.example>", b"RCPT TO:<b@example.com>"):
            conn.sendall(command + b"\r\n")
            assert replies.readline().startswith(b"250")
        conn.sendall(b"DATA\r\n")
        assert replies.readline().startswith(b"354")
        conn.sendall(make_message() + b".\r\n")
        message_id = replies.readline().split()[-1].decode()

    stored = (tmp_path / "data" / "s3" / "inbound" / message_id).read_bytes()
    head = stored[: stored.index(b"\r\nFrom: ")]
    assert (
        head.split(b"\r\n")[1] == f"Received: from {name} ({name} [127.0.0.1])".encode()
    )
    assert b"\r" not in head.replace(b"\r\n", b"")
    assert b"X-Injected" not in head


def test_control_characters_in_addresses_are_refused(write_config, serve, tmp_path):
    """A bare CR in MAIL FROM or RCPT TO cannot smuggle a header in."""
    server = serve(write_config({"rule_set": rule_set(STORE)}))

    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as conn:
        replies = conn.makefile("rb")
        replies.readline()
        conn.sendall(b"EHLO client.example\r\n")
        while not replies.readline().startswith(b"250 "):
            pass
        conn.sendall(b'MAIL FROM:<"a\rX-Evil: 1"@sender.example>\r\n')
        mail_reply = replies.readline()
        conn.sendall(b"MAIL FROM:<a@sender.example>\r\n")
        replies.readline()
        conn.sendall(b'RCPT TO:<"b\rX-Evil: 1"@example.com>\r\n')
        rcpt_reply = replies.readline()

    assert mail_reply == b"553 5.1.7 Bad sender address syntax\r\n"
    assert rcpt_reply == b"553 5.1.3 Bad recipient address syntax\r\n"


def test_a_recipient_given_twice_is_kept_once(write_config, serve, tmp_path):
    """Repeating RCPT TO, in any letter case, does not repeat the recipient."""
    server = serve(write_config({"rule_set": rule_set(STORE)}))

    sent = send(
        server.port,
        make_message(),
        rcpt_tos=["dup@example.com", "DUP@example.com", "dup@example.com"],
    )

    assert all(reply == (250, "Ok") for reply in sent.rcpt.values())
    trace = read_trace(tmp_path / "data", sent.message_id)
    assert trace["envelope"]["rcpt_tos"] == ["dup@example.com"]


def test_oversize_message_gets_552_5_3_4_and_is_not_stored(
    write_config, serve, tmp_path
):
    """Past max_message_size the reply is 552 5.3.4, at MAIL or at DATA."""
    config = write_config(
        {"server": {"max_message_size": 500}, "rule_set": rule_set(STORE)}
    )
    server = serve(config)

    with smtplib.SMTP("127.0.0.1", server.port) as client:
        client.ehlo("client.example")
        assert client.has_extn("size")
        declared = client.mail("a@sender.example", ["SIZE=100000"])
        client.rset()
        client.mail("a@sender.example")
        client.rcpt("bob@example.com")
        sent = client.data(make_message(body="x" * 600))

    assert declared == (552, b"5.3.4 Message too large")
    assert sent == (552, b"5.3.4 Message too large")
    assert stored_messages(tmp_path / "data" / "s3" / "inbound") == []


def test_oversize_refusals_are_logged(write_config, serve, caplog):
    """A 552 refusal leaves a line in the log, at MAIL and at DATA."""
    config = write_config(
        {"server": {"max_message_size": 500}, "rule_set": rule_set(STORE)}
    )
    server = serve(config)
    caplog.set_level("INFO", logger="sesrx.smtp")

    with smtplib.SMTP("127.0.0.1", server.port) as client:
        client.ehlo("client.example")
        client.mail("a@sender.example", ["SIZE=100000"])

    assert "127.0.0.1 refused an oversize message" in caplog.text


@pytest.mark.parametrize(
    "body",
    [
        b"Subject: lf\n\nline\n",
        b"Subject: cr\r\n\r\nline\rmore\r\n",
        b"A: b\r\n\r\nx\n.\r\n",
    ],
)
def test_bare_cr_or_lf_is_refused(write_config, serve, tmp_path, body):
    """A message with a CR or LF alone is refused with 554 5.6.0 and not stored."""
    server = serve(write_config({"rule_set": rule_set(STORE)}))

    sent = send(server.port, body)

    assert sent.data == (554, "5.6.0 Message has a bare CR or LF; end lines with CRLF")
    assert stored_messages(tmp_path / "data" / "s3" / "inbound") == []


def test_a_client_that_leaves_before_the_reply_does_not_cut_the_rules_short(
    write_config, tmp_path
):
    """The message is processed to its end, traced and listed, though nobody
    is left to read the reply; the lost session leaves no traceback."""
    config = write_config(
        {"rule_set": rule_set(rule("r", store("inbound"), call("handlers:slow")))}
    )
    server = ServerProcess(config, tmp_path / "data", tmp_path / "log")
    try:
        for reset in (False, True):
            with socket.create_connection(("127.0.0.1", server.port)) as conn:
                replies = conn.makefile("rb")
                replies.readline()
                for command in (b"HELO client.example", b"MAIL FROM:<a@sender.example>",
                                b"RCPT TO:<bob@example.com>", b"DATA"):  # fmt: skip
                    conn.sendall(command + b"\r\n")
                    replies.readline()
                conn.sendall(make_message() + b".\r\n")
                time.sleep(0.3)  # the handler runs for 1.5 s
                if reset:  # gone at once: a reset, not a polite close
                    linger = struct.pack("ii", 1, 0)
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)

        url = f"{server.api}/api/wait?count=2&timeout=10"
        with urllib.request.urlopen(url, timeout=20) as response:
            listed = json.load(response)["messages"]
    finally:
        assert server.stop() == 0

    assert len(listed) == 2
    for message in listed:
        trace = read_trace(tmp_path / "data", message["id"])
        assert trace["reply"] == f"250 OK {message['id']}"
        assert [a["outcome"] for a in trace["rules"][0]["actions"]] == ["ok", "ok"]
    log = (tmp_path / "log").read_text()
    assert "left before the reply to DATA" in log
    assert "Traceback" not in log
