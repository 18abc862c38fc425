"""Building blocks for tests: messages, SMTP sending, DKIM keys."""

from __future__ import annotations

import base64
import json
import smtplib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dkim
import nacl.signing

CRLF = b"\r\n"


def make_message(
    subject: str = "Hello",
    sender: str = "Alice <alice@sender.example>",
    to: str = "bob@example.com",
    body: str = "Hi Bob.",
    extra: tuple[tuple[str, str], ...] = (),
) -> bytes:
    """Return a small CRLF message with the given headers."""
    headers = [
        ("From", sender),
        ("To", to),
        ("Subject", subject),
        ("Date", "Thu, 03 Dec 2026 10:00:00 +0000"),
        ("Message-ID", "<test-1@sender.example>"),
        *extra,
    ]
    lines = [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n" + body + "\r\n").encode("utf-8")


@dataclass
class Sent:
    """Replies to one SMTP transaction."""

    rcpt: dict[str, tuple[int, str]] = field(default_factory=dict)
    data: tuple[int, str] | None = None

    @property
    def code(self) -> int | None:
        return None if self.data is None else self.data[0]

    @property
    def message_id(self) -> str:
        assert self.data is not None
        assert self.data[0] == 250, self.data
        return self.data[1].split()[-1]


def send(
    port: int,
    message: bytes,
    rcpt_tos: list[str] | tuple[str, ...] = ("bob@example.com",),
    mail_from: str = "alice@sender.example",
    host: str = "127.0.0.1",
) -> Sent:
    """Send one message over real SMTP; keep every reply."""
    sent = Sent()
    with smtplib.SMTP(host, port, timeout=30) as client:
        client.ehlo("client.example")
        code, reply = client.mail(mail_from)
        assert code == 250, reply
        for rcpt in rcpt_tos:
            code, reply = client.rcpt(rcpt)
            sent.rcpt[rcpt] = (code, reply.decode())
        if any(code == 250 for code, _ in sent.rcpt.values()):
            code, reply = client.data(message)
            sent.data = (code, reply.decode())
    return sent


class DkimKey:
    """A fresh Ed25519 DKIM key and the TXT record of its public half."""

    def __init__(self, domain: str = "sender.example", selector: str = "sel1") -> None:
        self.domain = domain
        self.selector = selector
        self._key = nacl.signing.SigningKey.generate()

    @property
    def record_name(self) -> str:
        return f"{self.selector}._domainkey.{self.domain}"

    @property
    def txt(self) -> str:
        public = base64.b64encode(bytes(self._key.verify_key)).decode()
        return f"v=DKIM1; k=ed25519; p={public}"

    def sign(self, message: bytes) -> bytes:
        """Return ``message`` with a DKIM-Signature on top."""
        seed = base64.b64encode(bytes(self._key))
        signature = dkim.sign(
            message,
            self.selector.encode(),
            self.domain.encode(),
            seed,
            signature_algorithm=b"ed25519-sha256",
            include_headers=[b"from", b"to", b"subject", b"date"],
        )
        return signature + message


def stored_messages(bucket_dir: Path) -> list[Path]:
    """Return the objects of a local bucket, less SES's setup notification."""
    if not bucket_dir.exists():
        return []
    return sorted(
        path
        for path in bucket_dir.rglob("*")
        if path.is_file() and path.name != "AMAZON_SES_SETUP_NOTIFICATION"
    )


def read_trace(data_dir: Path, message_id: str) -> dict[str, Any]:
    """Return the trace sesrx wrote for ``message_id``."""
    return json.loads((data_dir / "traces" / f"{message_id}.json").read_text())


def read_calls(folder: Path) -> list[dict[str, Any]]:
    """Return the calls test handlers recorded in ``calls.jsonl``."""
    path = folder / "calls.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


# A handler module that tests drop beside their config: each function
# records its event, context and name in calls.jsonl, then behaves as named.
RECORDING_HANDLERS = """
import asyncio, json, time
from pathlib import Path

CALLS = Path(__file__).with_name("calls.jsonl")


def _record(name, event, context):
    with CALLS.open("a") as out:
        out.write(json.dumps({
            "name": name,
            "event": event,
            "context": {
                "function_name": context.function_name,
                "invoked_function_arn": context.invoked_function_arn,
                "aws_request_id": context.aws_request_id,
                "remaining": context.get_remaining_time_in_millis(),
                "memory_limit_in_mb": context.memory_limit_in_mb,
                "log_group_name": context.log_group_name,
            },
        }) + "\\n")


def record(event, context):
    _record("record", event, context)


def stop_rule(event, context):
    _record("stop_rule", event, context)
    return {"disposition": "STOP_RULE"}


def stop_rule_set(event, context):
    _record("stop_rule_set", event, context)
    return {"Disposition": "x", "disposition": "Stop_Rule_Set"}


class _Unprintable(Exception):
    def __str__(self):
        raise RuntimeError("no text for you")


def bad_text(event, context):
    _record("bad_text", event, context)
    raise ValueError("bad \\udcff text")


def unprintable(event, context):
    _record("unprintable", event, context)
    raise _Unprintable()


def typo(event, context):
    _record("typo", event, context)
    return {"disposition": "STOP"}


def raises(event, context):
    _record("raises", event, context)
    raise RuntimeError("handler failed on purpose")


def slow(event, context):
    time.sleep(1.5)
    _record("slow", event, context)
    return {"disposition": "STOP_RULE_SET"}


def chatty(event, context):
    import logging
    print("printed line one")
    print("printed", "line two")
    logging.getLogger("my.handler").warning("logged warning %s", 42)
    _record("chatty", event, context)
    print("tail without a line break", end="")


def forever(event, context):
    _record("forever", event, context)
    import threading
    threading.Event().wait()


def exits(event, context):
    _record("exits", event, context)
    import sys
    sys.exit(3)


async def async_blocks(event, context):
    time.sleep(1.5)
    _record("async_blocks", event, context)
    return {"disposition": "STOP_RULE_SET"}


def unserialisable(event, context):
    _record("unserialisable", event, context)
    return {"disposition": "STOP_RULE_SET", "when": {1, 2}}


def leaves_a_process(event, context):
    import atexit, multiprocessing
    multiprocessing.Process(target=time.sleep, args=(15,), daemon=False).start()
    atexit.register(time.sleep, 600)
    _record("leaves_a_process", event, context)


def leaves_threads(event, context):
    import concurrent.futures, threading
    threading.Thread(target=time.sleep, args=(600,)).start()
    concurrent.futures.ThreadPoolExecutor(1).submit(time.sleep, 600)
    _record("leaves_threads", event, context)


async def async_stop(event, context):
    await asyncio.sleep(0.05)
    _record("async_stop", event, context)
    return {"disposition": "STOP_RULE_SET"}
"""


# Bounce with a permanent "no such mailbox".
BOUNCE = {
    "bounce": {
        "smtp_reply_code": "550",
        "status_code": "5.1.1",
        "message": "Mailbox does not exist",
        "sender": "mailer-daemon@example.com",
    }
}


def rule_set(*rules: dict[str, Any], name: str = "test-rules") -> dict[str, Any]:
    """Return a ``rule_set`` mapping holding ``rules``."""
    return {"name": name, "rules": list(rules)}


def rule(name: str, *actions: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """Return one receipt rule mapping."""
    return {"name": name, **fields, "actions": list(actions)}


def call(function_arn: str, kind: str = "RequestResponse") -> dict[str, Any]:
    """Return a Lambda action mapping."""
    return {"lambda": {"function_arn": function_arn, "invocation_type": kind}}


def store(bucket: str, **fields: Any) -> dict[str, Any]:
    """Return an S3 action mapping."""
    return {"s3": {"bucket_name": bucket, **fields}}
