"""The mailbox behind the API's lists and its event stream."""

from __future__ import annotations

from sesrx.mailbox import STREAM_QUEUE, Entry, Mailbox


def entry(number: int) -> Entry:
    return Entry(
        message_id=f"{number:040d}",
        received_at="2026-12-03T10:00:00.000+00:00",
        timestamp=1796292000.0 + number,
        mail_from="alice@sender.example",
        recipients=("bob@example.com",),
        subject=f"number {number}",
        size=100,
        reply="250 OK",
        rules=(),
    )


def test_a_listener_that_falls_behind_is_told_to_reload():
    """Past a full queue the backlog becomes one reload; later events still come."""
    mailbox = Mailbox(limit=10)
    queue = mailbox.listen()
    for number in range(STREAM_QUEUE + 1):
        mailbox.add(entry(number), b"")

    assert queue.qsize() == 1
    assert queue.get_nowait() == {"event": "reload", "data": {}}

    mailbox.add(entry(STREAM_QUEUE + 1), b"")
    event = queue.get_nowait()
    assert event["event"] == "message"
    assert event["data"]["subject"] == f"number {STREAM_QUEUE + 1}"
