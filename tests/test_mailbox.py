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


def test_entries_are_bounded_in_memory_as_well_as_in_number():
    """A thousand long recipients per message cannot grow the list without end."""
    import dataclasses

    from sesrx.mailbox import ENTRY_BUDGET

    mailbox = Mailbox(limit=10_000)
    recipients = tuple(f"{'x' * 380}{n}@example.com" for n in range(1000))
    for number in range(300):
        mailbox.add(dataclasses.replace(entry(number), recipients=recipients), b"")

    kept = mailbox._entries.values()
    assert 0 < len(kept) < 300
    assert sum(item.weight for item in kept) <= ENTRY_BUDGET
    assert mailbox.get(f"{299:040d}") is not None  # the newest stay


def test_traces_that_are_not_traces_are_skipped(tmp_path):
    """Links, pipes, wrong types and deep nesting in traces/ do not stop a start."""
    import json
    import os

    from sesrx.mailbox import read_traces

    good = {
        "message_id": "a" * 40,
        "received_at": "2026-12-03T10:00:00.000+00:00",
        "envelope": {"mail_from": "a@b.example", "rcpt_tos": ["c@d.example"]},
        "rules": [],
        "reply": "250 OK",
    }
    (tmp_path / f"{'a' * 40}.json").write_text(json.dumps(good))
    (tmp_path / f"{'b' * 40}.json").write_text("[" * 100_000)
    (tmp_path / f"{'c' * 40}.json").write_text(
        json.dumps({**good, "message_id": "c" * 40, "envelope": {"rcpt_tos": [1, 2]}})
    )
    (tmp_path / f"{'d' * 40}.json").write_text(
        json.dumps({**good, "message_id": ["x"]})
    )
    os.symlink("/dev/zero", tmp_path / f"{'e' * 40}.json")
    os.mkfifo(tmp_path / f"{'f' * 40}.json")
    (tmp_path / f"{'g' * 40}.json").write_text(
        json.dumps({**good, "message_id": "g" * 40}).replace(
            '"rules": []', '"rules": [], "envelope2": NaN'
        )
    )

    entries = read_traces(tmp_path, limit=100)

    assert sorted(e.message_id for e in entries) == ["a" * 40, "g" * 40]
