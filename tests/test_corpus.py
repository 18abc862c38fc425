"""Real messages and DKIM vectors from other projects' test suites.

The files live in ../shared/corpus beside the clone; see its SOURCES.md.
Files with LF line endings are turned into CRLF before sending, as an SMTP
client must (smtplib sends bytes unchanged).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from sesrx.loader import load_config
from sesrx.threaded import ServerThread

from conftest import CORPUS
from helpers import (
    RECORDING_HANDLERS,
    call,
    make_message,
    read_calls,
    read_trace,
    rule,
    rule_set,
    send,
    store,
)

pytestmark = pytest.mark.e2e

NO_CORPUS = f"no shared corpus at {CORPUS} (only the team's checkout has it)"
# Without the corpus each parametrized test still appears, skipped with why.
ABSENT = [pytest.param(None, marks=pytest.mark.skip(reason=NO_CORPUS))]
MESSAGES = sorted((CORPUS / "messages").glob("*")) if CORPUS.is_dir() else ABSENT
DKIM_EXPECTED = CORPUS / "dkim" / "expected.yaml"


def as_sent(raw: bytes) -> bytes:
    """Return what an SMTP client transmits: CRLF line ends, a final CRLF."""
    text = re.sub(rb"\r?\n", b"\r\n", raw)
    return text if text.endswith(b"\r\n") else text + b"\r\n"


def envelope_lines(raw: bytes) -> tuple[bytes, str | None, list[str] | None]:
    """Strip mailcrab's two envelope lines (Sender:, Recipients:) if present."""
    lines = raw.split(b"\n", 2)
    if (
        len(lines) == 3
        and lines[0].startswith(b"Sender: ")
        and lines[1].startswith(b"Recipients: ")
    ):
        sender = lines[0][8:].strip().decode()
        recipients = [r.strip() for r in lines[1][12:].decode().split(",")]
        return lines[2], sender, recipients
    return raw, None, None


def start_server(folder: Path, document: dict[str, Any]) -> ServerThread:
    (folder / "handlers.py").write_text(RECORDING_HANDLERS)
    path = folder / "sesrx.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "data_dir": "./data",
                "server": {"port": 0, "api": {"port": 0}},
                **document,
            }
        )
    )
    server = ServerThread(load_config(path))
    server.start()
    return server


@pytest.fixture(scope="module")
def corpus_server(tmp_path_factory) -> Iterator[tuple[ServerThread, Path]]:
    if not CORPUS.is_dir():
        pytest.skip(NO_CORPUS)
    folder = tmp_path_factory.mktemp("corpus")
    keys = yaml.safe_load((CORPUS / "dkim" / "keys.yaml").read_text())
    server = start_server(
        folder,
        {
            "dns": {"txt": keys},
            "rule_set": rule_set(
                rule("all", store("corpus"), call("handlers:record", "RequestResponse"))
            ),
        },
    )
    yield server, folder
    server.stop()


@pytest.mark.parametrize("path", MESSAGES, ids=lambda p: getattr(p, "name", "absent"))
def test_every_real_message_is_stored_and_processed(corpus_server, path):
    """Each message is accepted; the object ends with exactly the bytes sent."""
    server, folder = corpus_server
    raw, sender, recipients = envelope_lines(path.read_bytes())
    sent_bytes = as_sent(raw)

    sent = send(
        server.port,
        sent_bytes,
        rcpt_tos=recipients or ["bob@example.com"],
        mail_from=sender or "alice@sender.example",
    )
    stored = (folder / "data" / "s3" / "corpus" / sent.message_id).read_bytes()
    events = [c["event"] for c in read_calls(folder)]
    mail = next(
        e
        for e in events
        if e["Records"][0]["ses"]["mail"]["messageId"] == sent.message_id
    )
    mail = mail["Records"][0]["ses"]["mail"]

    assert stored.endswith(sent_bytes)
    assert stored.startswith(b"Return-Path: <")
    assert mail["headers"][0]["name"] == "Return-Path"
    assert read_trace(folder / "data", sent.message_id)["reply"].startswith("250 OK ")
    for header in mail["headers"]:
        assert "\r" not in header["value"]
        assert "\n" not in header["value"]


def dkim_cases() -> list[Any]:
    if not DKIM_EXPECTED.is_file():
        return [pytest.param(None, None, marks=pytest.mark.skip(reason=NO_CORPUS))]
    expected = yaml.safe_load(DKIM_EXPECTED.read_text())
    return [
        pytest.param(name, case, id=name)
        for name, case in expected.items()
        if isinstance(case, dict) and "sigs" in case
    ]


@pytest.mark.parametrize(("name", "case"), dkim_cases())
def test_dkim_verdicts_match_the_vectors(corpus_server, name, case):
    """dkimVerdict is PASS when a signature verifies and FAIL when none does."""
    server, folder = corpus_server
    raw = (CORPUS / "dkim" / name).read_bytes()

    sent = send(server.port, as_sent(raw))
    trace = read_trace(folder / "data", sent.message_id)
    events = [c["event"]["Records"][0]["ses"] for c in read_calls(folder)]
    [ses] = [e for e in events if e["mail"]["messageId"] == sent.message_id]

    wanted = "PASS" if any(sig["expect"] == "pass" for sig in case["sigs"]) else "FAIL"
    assert ses["receipt"]["dkimVerdict"] == {"status": wanted}
    results = [s["result"] == "pass" for s in trace["dkim_signatures"]]
    assert results == [sig["expect"] == "pass" for sig in case["sigs"]]
    assert [s["domain"] for s in trace["dkim_signatures"]] == [
        sig["d"] for sig in case["sigs"]
    ]


def test_unsigned_corpus_message_is_gray(corpus_server):
    """A message with no DKIM-Signature gets GRAY."""
    server, folder = corpus_server

    sent = send(
        server.port, as_sent((CORPUS / "dkim" / "dkimpy-test.message").read_bytes())
    )

    assert read_trace(folder / "data", sent.message_id)["verdicts"]["dkim"] == "GRAY"


def shape(value: Any) -> Any:
    """Return the structure of a JSON value: keys and value types, not values."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    return type(value).__name__


@pytest.mark.parametrize(
    "sample",
    ["awsdocs-lambda-action-event.derived.json", "powertools-python-sesEvent.json"],
)
def test_lambda_event_has_the_shape_of_real_samples(corpus_server, sample):
    """Our event has the keys and value types of SES's published Lambda events."""
    server, folder = corpus_server
    expected = shape(json.loads((CORPUS / "ses-events" / sample).read_text()))
    message = make_message(extra=(("Cc", "c@example.com"),))

    sent = send(server.port, message)
    [event] = [
        c["event"]
        for c in read_calls(folder)
        if c["event"]["Records"][0]["ses"]["mail"]["messageId"] == sent.message_id
    ]
    got = shape(event)

    record, wanted = got["Records"][0], expected["Records"][0]
    assert record.keys() == wanted.keys()
    assert record["ses"]["mail"] == {
        **wanted["ses"]["mail"],
        "commonHeaders": record["ses"]["mail"]["commonHeaders"],
    }
    common = record["ses"]["mail"]["commonHeaders"]
    for key, kind in wanted["ses"]["mail"]["commonHeaders"].items():
        assert common[key] == kind
    # dmarcPolicy is only present when DMARC fails (reference section 4.3).
    wanted_receipt = {
        k: v for k, v in wanted["ses"]["receipt"].items() if k != "dmarcPolicy"
    }
    assert record["ses"]["receipt"] == wanted_receipt


def test_gtube_corpus_message_is_spam(corpus_server):
    """The real GTUBE message of the corpus gets spam FAIL."""
    server, folder = corpus_server
    raw = (CORPUS / "messages" / "spamscope-mail_test_16").read_bytes()

    sent = send(server.port, as_sent(raw))
    verdicts = read_trace(folder / "data", sent.message_id)["verdicts"]

    assert (verdicts["spam"], verdicts["virus"]) == ("FAIL", "PASS")


def test_lf_only_message_sent_as_is_is_refused(corpus_server):
    """The LF-only copy of a message, sent without fixing its line ends, gets 554."""
    server, _ = corpus_server
    raw = (CORPUS / "messages" / "mikel-basic_email_lf.eml").read_bytes()

    sent = send(server.port, raw[:900] + b"\n")

    assert sent.data is not None
    assert sent.data[0] == 554


def test_sns_notification_has_the_shape_of_the_real_sample(tmp_path_factory):
    """The SNS action's Message has the keys and value types of SES's sample."""
    if not CORPUS.is_dir():
        pytest.skip(NO_CORPUS)
    folder = tmp_path_factory.mktemp("sns")
    topic = "arn:aws:sns:us-east-1:123456789012:IncomingEmail"
    sns = {"sns": {"topic_arn": topic, "encoding": "Base64"}}
    server = start_server(folder, {"rule_set": rule_set(rule("r", sns))})
    try:
        send(server.port, make_message())
    finally:
        server.stop()
    line = (folder / "data" / "sns" / "IncomingEmail.jsonl").read_text()
    got = shape(json.loads(json.loads(line)["Message"]))
    sample = (
        CORPUS / "ses-events" / "awsdocs-sns-received-notification-2019.derived.json"
    )
    wanted = shape(json.loads(sample.read_text()))

    assert list(got) == list(wanted)
    assert got["receipt"] == wanted["receipt"]
    assert got["mail"] == {
        **wanted["mail"],
        "commonHeaders": got["mail"]["commonHeaders"],
    }
    assert got["content"] == wanted["content"]
