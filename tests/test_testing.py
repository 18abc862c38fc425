"""sesrx.testing.Sesrx used directly, as outside pytest."""

from __future__ import annotations

from email.message import EmailMessage

import pytest

from sesrx.testing import Sesrx


def test_send_takes_an_email_message_text_or_bytes(tmp_path):
    """EmailMessage and str go out with CRLF line ends; a str data_dir works."""
    email = EmailMessage()
    email["From"] = "Alice <alice@sender.example>"
    email["To"] = "bob@example.com"
    email["Subject"] = "from EmailMessage"
    email.set_content("line one\nline two\n")
    text = "From: a@sender.example\nTo: carol@example.com\nSubject: text\n\nhi\n"

    with Sesrx(None, data_dir=str(tmp_path / "data")) as server:
        first = server.send(email)
        second = server.send(text)
        third = server.send(b"Subject: raw\r\n\r\nbare\nline\r\n", to="dan@example.com")

        assert (first.code, second.code) == (250, 250)
        assert third.code == 554  # bytes are sent as given: the bare LF is refused
        received = server.wait_for("example.com", count=2)
        assert [m.subject for m in received] == ["from EmailMessage", "text"]
        assert received[0].recipients == ("bob@example.com",)
        assert received[0].raw.endswith(b"line one\r\nline two\r\n")
        assert received[1].raw.endswith(b"\r\n\r\nhi\r\n")


def test_dkim_sign_takes_what_send_takes(tmp_path):
    """An EmailMessage or LF text is signed as it will be sent: PASS."""
    email = EmailMessage()
    email["From"] = "Alice <alice@sender.example>"
    email["To"] = "bob@example.com"
    email["Subject"] = "signed"
    email.set_content("line one\nline two\n")
    text = "From: alice@sender.example\nTo: carol@example.com\nSubject: t\n\nhi\n"

    with Sesrx(None, data_dir=tmp_path / "data") as server:
        assert server.send(server.dkim_sign(email, "sender.example")).code == 250
        assert server.send(server.dkim_sign(text, "sender.example")).code == 250
        first, second = server.wait_for("example.com", count=2)

        assert first.verdicts["dkim"] == "PASS"
        assert second.verdicts["dkim"] == "PASS"


def test_wait_for_names_every_filter_when_time_runs_out(tmp_path):
    with (
        Sesrx(None, data_dir=tmp_path / "data") as server,
        pytest.raises(
            TimeoutError, match=r"\(recipient=x@example\.com, rule=nope\); 0 done"
        ),
    ):
        server.wait_for("x@example.com", rule="nope", timeout=0.2)
