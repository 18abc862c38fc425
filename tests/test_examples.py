"""The six use cases of SES's Lambda documentation, from config/examples.

Each test loads the example as a user would, points its data folder at a
temporary one, adds a test DKIM key to its DNS zone, and sends mail to it
over real SMTP.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from types import MappingProxyType

import pytest

from sesrx.loader import load_config
from sesrx.scan import GTUBE
from sesrx.threaded import ServerThread

from conftest import EXAMPLES
from helpers import DkimKey, make_message, read_trace, send, stored_messages

pytestmark = pytest.mark.e2e


@pytest.fixture
def key() -> DkimKey:
    return DkimKey()


@pytest.fixture
def example(serve, tmp_path, key):
    """Start the named example with its data under tmp_path."""

    def start(name: str) -> ServerThread:
        config = load_config(EXAMPLES / name / "sesrx.yaml")
        zone = MappingProxyType({**config.dns_txt, key.record_name: key.txt})
        return serve(dataclasses.replace(config, data_dir=tmp_path, dns_txt=zone))

    return start


def signed(key: DkimKey, tamper: bool = False, **fields: str) -> bytes:
    message = key.sign(make_message(**fields))
    return message.replace(b"Hi Bob.", b"Hi Bob!") if tamper else message


def objects(tmp_path: Path, bucket: str) -> list[str]:
    return sorted(p.name for p in stored_messages(tmp_path / "s3" / bucket))


def log_lines(tmp_path: Path, function: str) -> list[str]:
    path = tmp_path / "logs" / f"{function}.log"
    if not path.exists():
        return []
    return [line.split("\t", 2)[2] for line in path.read_text().splitlines()]


def test_drop_spam(example, tmp_path, key):
    """Mail failing a verdict is dropped everywhere; clean mail reaches its rule."""
    server = example("drop-spam")

    clean = send(
        server.port, signed(key), rcpt_tos=["a@example1.com", "b@example2.com"]
    )
    spam = send(server.port, signed(key, tamper=True), rcpt_tos=["a@example1.com"])

    assert clean.code == spam.code == 250
    assert objects(tmp_path, "example1-mail") == [clean.message_id]
    assert objects(tmp_path, "example2-mail") == [clean.message_id]
    rules = read_trace(tmp_path, spam.message_id)["rules"]
    assert rules[0]["actions"][0]["disposition"] == "STOP_RULE_SET"
    assert [r["status"] for r in rules] == ["matched", "not reached", "not reached"]
    assert f"dropping {spam.message_id}: dkimVerdict" in log_lines(
        tmp_path, "drop-spam"
    )
    gtube = send(
        server.port, make_message(body=GTUBE.decode()), rcpt_tos=["a@example2.com"]
    )
    assert f"dropping {gtube.message_id}: spamVerdict" in log_lines(
        tmp_path, "drop-spam"
    )
    assert gtube.message_id not in objects(tmp_path, "example2-mail")


def test_bounce_spam(example, tmp_path, key):
    """Spam is bounced with 500 5.6.1 and stopped; clean mail skips the bounce."""
    server = example("bounce-spam")

    clean = send(server.port, signed(key), rcpt_tos=["a@example1.com"])
    spam = send(server.port, signed(key, tamper=True), rcpt_tos=["a@example1.com"])

    assert clean.code == 250
    assert spam.data == (500, "5.6.1 Message content rejected")
    assert objects(tmp_path, "example1-mail") == [clean.message_id]
    clean_rule = read_trace(tmp_path, clean.message_id)["rules"][0]
    assert [(a["type"], a["outcome"]) for a in clean_rule["actions"]] == [
        ("Lambda", "ok"),
        ("Bounce", "not reached"),
        ("Stop", "not reached"),
    ]
    assert clean_rule["actions"][0]["disposition"] == "STOP_RULE"


def test_most_specific_rule_wins(example, tmp_path):
    """user@example.com goes to the Lambda function only; others are stored."""
    server = example("most-specific-rule")

    to_user = send(server.port, make_message(), rcpt_tos=["user@example.com"])
    to_other = send(server.port, make_message(), rcpt_tos=["other@example.com"])
    assert server.wait_idle()

    assert objects(tmp_path, "example-mail") == [to_other.message_id]
    lines = log_lines(tmp_path, "notify-user")
    assert f"message {to_user.message_id} for user@example.com" in lines
    assert not any(to_other.message_id in line for line in lines)


def test_audit_log(example, tmp_path):
    """Every event is written to the function's log, and the message stored."""
    server = example("audit-log")

    sent = send(
        server.port,
        make_message(subject="Quarterly report"),
        rcpt_tos=["finance@example.com"],
    )
    assert server.wait_idle()

    assert objects(tmp_path, "audited-mail") == [sent.message_id]
    assert (tmp_path / "s3" / "audited-mail" / "incoming" / sent.message_id).is_file()
    [event] = [json.loads(t) for t in log_lines(tmp_path, "audit") if t.startswith("{")]
    ses = event["Records"][0]["ses"]
    assert ses["mail"]["messageId"] == sent.message_id
    assert ses["mail"]["commonHeaders"]["subject"] == "Quarterly report"
    assert ses["receipt"]["action"]["invocationType"] == "Event"


def test_drop_mail_failing_dkim(example, tmp_path, key):
    """All mail is stored; only mail passing DKIM reaches the support function."""
    server = example("dkim-check")

    good = send(
        server.port, signed(key, subject="Printer"), rcpt_tos=["support@example.com"]
    )
    bad = send(
        server.port,
        signed(key, tamper=True, subject="Forged"),
        rcpt_tos=["support@example.com"],
    )
    assert server.wait_idle()

    assert objects(tmp_path, "all-mail") == sorted([good.message_id, bad.message_id])
    lines = log_lines(tmp_path, "support-ticket")
    assert f"ticket for {good.message_id}: Printer" in lines
    assert not any(bad.message_id in line for line in lines)
    assert read_trace(tmp_path, bad.message_id)["verdicts"]["dkim"] == "FAIL"
    assert read_trace(tmp_path, good.message_id)["verdicts"]["dkim"] == "PASS"


def test_subject_filter(example, tmp_path):
    """ "discount" mail is dropped; support mail and other mail go to their buckets."""
    server = example("subject-filter")

    offer = send(
        server.port,
        make_message(subject="Huge DISCOUNT today"),
        rcpt_tos=["support@example.com"],
    )
    support = send(
        server.port, make_message(subject="Help"), rcpt_tos=["support@example.com"]
    )
    other = send(
        server.port, make_message(subject="Hello"), rcpt_tos=["sales@example.com"]
    )
    assert server.wait_idle()

    assert offer.code == support.code == other.code == 250
    assert objects(tmp_path, "support-mail") == [support.message_id]
    assert objects(tmp_path, "other-mail") == [other.message_id]
    assert log_lines(tmp_path, "support-ticket").count("ticket: Help") == 1
    assert f"archived {other.message_id}" in log_lines(tmp_path, "archive")
    assert "dropping: Huge DISCOUNT today" in log_lines(tmp_path, "subject-filter")
