"""STARTTLS, implicit TLS, and rules that require TLS."""

from __future__ import annotations

import smtplib
import ssl

import pytest

from sesrx.errors import ConfigError
from sesrx.loader import load_config

from helpers import make_message, read_trace, rule, rule_set, store

pytestmark = pytest.mark.e2e

VAULT = rule(
    "vault", store("vault"), recipients=["vault@example.com"], tls_policy="Require"
)


def client_context() -> ssl.SSLContext:
    # The certificate is made up at start, as test clients expect.
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def test_starttls_lets_tls_only_recipients_in(write_config, serve, tmp_path):
    """After STARTTLS a Require rule's recipient is accepted and the trace says TLS."""
    server = serve(
        write_config({"server": {"tls": "auto"}, "rule_set": rule_set(VAULT)})
    )

    with smtplib.SMTP("127.0.0.1", server.port) as client:
        client.ehlo("client.example")
        assert client.has_extn("starttls")
        client.starttls(context=client_context())
        client.ehlo("client.example")
        assert not client.has_extn("auth")  # SES offers no AUTH
        client.mail("a@sender.example")
        assert client.rcpt("vault@example.com") == (250, b"Ok")
        code, reply = client.data(make_message())

    message_id = reply.decode().split()[-1]
    assert code == 250
    assert read_trace(tmp_path / "data", message_id)["envelope"]["tls"] is True


def test_plain_session_is_refused_tls_only_recipients(write_config, serve):
    """Without STARTTLS the same recipient gets 550 5.7.1."""
    server = serve(
        write_config({"server": {"tls": "auto"}, "rule_set": rule_set(VAULT)})
    )

    with smtplib.SMTP("127.0.0.1", server.port) as client:
        client.ehlo("client.example")
        client.mail("a@sender.example")
        refused = client.rcpt("vault@example.com")

    assert refused == (550, b"5.7.1 TLS required by recipient")


def test_implicit_tls_port(write_config, serve, tmp_path):
    """With tls.port set, a second listener speaks TLS from the first byte."""
    config = write_config({"server": {"tls": {"port": 0}}, "rule_set": rule_set(VAULT)})
    server = serve(config)

    tls_port = server.server.tls_port
    assert tls_port is not None
    with smtplib.SMTP_SSL("127.0.0.1", tls_port, context=client_context()) as client:
        client.ehlo("client.example")
        client.mail("a@sender.example")
        assert client.rcpt("vault@example.com") == (250, b"Ok")
        code, _ = client.data(make_message())

    assert code == 250


def test_tls_settings_are_checked(write_config, tmp_path):
    """A certificate without a key, or a missing file, is a config error."""
    for tls, words in (
        ({"cert": "cert.pem"}, "give both cert and key"),
        ({"cert": "cert.pem", "key": "key.pem"}, "no such file"),
        ("yes", "expected auto"),
    ):
        path = write_config({"server": {"tls": tls}, "rule_set": rule_set(VAULT)})
        with pytest.raises(ConfigError, match=words):
            load_config(path)
