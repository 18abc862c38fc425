"""Local SNS topics: what SES publishes, kept where a test or an app can read it.

Every notification is appended, in the envelope SNS delivers to HTTP and SQS
subscribers, to ``<data_dir>/sns/<topic name>.jsonl``; a topic with an
``endpoint`` also gets it POSTed there, as SNS posts to an HTTP subscriber,
so an app in docker-compose can subscribe.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import threading
import urllib.request
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sesrx.config import Topic
from sesrx.errors import StorageError

__all__ = ["Publisher", "topic_name"]

log = logging.getLogger("sesrx.sns")

SUBJECT = "Amazon SES Email Receipt Notification"
POST_TIMEOUT = 10.0


def topic_name(topic_arn: str) -> str:
    """Return the topic's name, the last part of its ARN."""
    return topic_arn.rpartition(":")[2]


class Publisher:
    """Append notifications to topic files and post them to subscribers."""

    def __init__(self, folder: Path, topics: Mapping[str, Topic]) -> None:
        self.folder = folder
        self.topics = topics
        self._lock = threading.Lock()

    def publish(self, topic_arn: str, message: dict[str, Any]) -> dict[str, Any]:
        """Publish ``message``; return the SNS envelope it went out in."""
        envelope = _envelope(topic_arn, json.dumps(message, ensure_ascii=False))
        line = json.dumps(envelope, ensure_ascii=False) + "\n"
        path = self.folder / f"{topic_name(topic_arn)}.jsonl"
        try:
            with self._lock:
                path.parent.mkdir(parents=True, exist_ok=True)
                with path.open("a", encoding="utf-8") as stream:
                    stream.write(line)
        except OSError as exc:
            raise StorageError(f"cannot write {path}: {exc}") from exc

        topic = self.topics.get(topic_name(topic_arn))
        if topic is not None and topic.endpoint:
            _post_later(topic.endpoint, envelope)
        return envelope


def _envelope(topic_arn: str, message: str) -> dict[str, Any]:
    """Return the JSON SNS sends an HTTP subscriber (unsigned here)."""
    stamp = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    message_id = str(uuid.uuid4())
    return {
        "Type": "Notification",
        "MessageId": message_id,
        "TopicArn": topic_arn,
        "Subject": SUBJECT,
        "Message": message,
        "Timestamp": stamp,
        "SignatureVersion": "1",
        "Signature": base64.b64encode(os.urandom(256)).decode("ascii"),
        "SigningCertURL": "http://localhost/sesrx-does-not-sign.pem",
        "UnsubscribeURL": f"http://localhost/unsubscribe?topic={topic_arn}",
    }


def _post_later(endpoint: str, envelope: dict[str, Any]) -> None:
    """POST on a daemon thread: a slow subscriber must not hold up mail."""
    threading.Thread(
        target=_post, args=(endpoint, envelope), name="sesrx-sns", daemon=True
    ).start()


def _post(endpoint: str, envelope: dict[str, Any]) -> None:
    request = urllib.request.Request(
        endpoint,
        data=json.dumps(envelope).encode("utf-8"),
        method="POST",
        headers={
            "Content-Type": "text/plain; charset=UTF-8",
            "x-amz-sns-message-type": "Notification",
            "x-amz-sns-message-id": envelope["MessageId"],
            "x-amz-sns-topic-arn": envelope["TopicArn"],
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=POST_TIMEOUT) as response:
            response.read()
    except OSError as exc:
        log.warning("cannot post to %s: %s", endpoint, exc)
