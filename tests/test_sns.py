"""SNS: the SNS action, topic notifications, and HTTP subscribers."""

from __future__ import annotations

import base64
import http.server
import json
import threading
import time

import pytest

from helpers import make_message, read_trace, rule, rule_set, send, store

pytestmark = pytest.mark.e2e

TOPIC = "arn:aws:sns:us-east-1:123456789012:inbound"


def published(tmp_path, topic: str = "inbound") -> list[dict]:
    path = tmp_path / "data" / "sns" / f"{topic}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize(
    ("encoding", "spelled"), [("UTF-8", "UTF8"), ("Base64", "BASE64")]
)
def test_sns_action_publishes_the_whole_message(
    write_config, serve, tmp_path, encoding, spelled
):
    """content is the stored message, in UTF-8 or base64, inside SNS's envelope."""
    sns = {"sns": {"topic_arn": TOPIC, "encoding": encoding}}
    config = write_config({"rule_set": rule_set(rule("r", store("inbound"), sns))})
    server = serve(config)

    sent = send(server.port, make_message(subject="caf\xe9"))
    [envelope] = published(tmp_path)
    message = json.loads(envelope["Message"])
    stored = (tmp_path / "data" / "s3" / "inbound" / sent.message_id).read_bytes()

    assert envelope["Type"] == "Notification"
    assert envelope["TopicArn"] == TOPIC
    assert envelope["Subject"] == "Amazon SES Email Receipt Notification"
    assert list(message) == ["notificationType", "mail", "receipt", "content"]
    assert message["notificationType"] == "Received"
    assert message["receipt"]["action"] == {
        "type": "SNS",
        "topicArn": TOPIC,
        "encoding": spelled,
    }
    content = message["content"]
    body = base64.b64decode(content) if spelled == "BASE64" else content.encode()
    assert body == stored


def test_topic_arn_on_an_action_publishes_metadata(write_config, serve, tmp_path):
    """An S3 action with topic_arn publishes Received without content."""
    s3 = store("inbound", object_key_prefix="emails", topic_arn=TOPIC)
    config = write_config({"rule_set": rule_set(rule("r", s3))})
    server = serve(config)

    sent = send(server.port, make_message())
    [envelope] = published(tmp_path)
    message = json.loads(envelope["Message"])

    assert "content" not in message
    assert message["mail"]["messageId"] == sent.message_id
    assert message["receipt"]["action"] == {
        "type": "S3",
        "topicArn": TOPIC,
        "bucketName": "inbound",
        "objectKeyPrefix": "emails",
        "objectKey": f"emails/{sent.message_id}",
    }


def test_mail_over_150_kb_is_not_published(write_config, serve, tmp_path):
    """As SES does, a message over 150 KB is silently left out of SNS."""
    sns = {"sns": {"topic_arn": TOPIC}}
    config = write_config({"rule_set": rule_set(rule("r", sns))})
    server = serve(config)

    sent = send(server.port, make_message(body=("x" * 70 + "\r\n") * 2300))
    action = read_trace(tmp_path / "data", sent.message_id)["rules"][0]["actions"][0]

    assert sent.code == 250
    assert action["outcome"] == "not-published"
    assert not (tmp_path / "data" / "sns" / "inbound.jsonl").exists()


class Recorder(http.server.BaseHTTPRequestHandler):
    """An HTTP subscriber that keeps what it is sent."""

    received: list[tuple[dict[str, str], bytes]] = []

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        headers = {name.lower(): value for name, value in self.headers.items()}
        Recorder.received.append((headers, body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        """Keep the test output quiet."""


def test_topic_endpoint_gets_the_notification_posted(write_config, serve, tmp_path):
    """A topic with an endpoint receives each notification as SNS posts it."""
    Recorder.received = []
    subscriber = http.server.HTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=subscriber.serve_forever, daemon=True).start()
    try:
        endpoint = f"http://127.0.0.1:{subscriber.server_port}/ses"
        config = write_config(
            {
                "topics": {"inbound": {"endpoint": endpoint}},
                "rule_set": rule_set(rule("r", {"sns": {"topic_arn": TOPIC}})),
            }
        )
        server = serve(config)
        send(server.port, make_message())
        deadline = time.monotonic() + 10
        while not Recorder.received and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        subscriber.shutdown()
        subscriber.server_close()

    [(headers, body)] = Recorder.received
    assert headers["x-amz-sns-message-type"] == "Notification"
    assert headers["x-amz-sns-topic-arn"] == TOPIC
    assert json.loads(body) == published(tmp_path)[0]
