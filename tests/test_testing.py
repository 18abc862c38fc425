"""sesrx.testing.Sesrx used directly, as outside pytest."""

from __future__ import annotations

from email.message import EmailMessage

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
