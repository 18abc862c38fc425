"""Turn the bounces a rule set recorded into an SMTP reply or DSN messages.

``bounce_mode: reject`` answers DATA with the first bounce's code when the
bounces covered every accepted recipient; otherwise, and always with
``bounce_mode: dsn`` (what SES itself does), the reply stays 250 and each
bounce becomes an RFC 3464 delivery status notification in the outbox.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from email.encoders import encode_base64
from email.message import Message
from email.mime.application import MIMEApplication
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import format_datetime, make_msgid

from sesrx.inbound import Bounce, Delivery
from sesrx.message import header_block, render_fields
from sesrx.storage import DataDir

__all__ = ["build_dsn", "settle_bounces"]

log = logging.getLogger("sesrx.bounce")


async def settle_bounces(
    delivery: Delivery, mode: str, hostname: str, data_dir: DataDir
) -> str | None:
    """Return the reply that replaces ``250 OK``, or write the DSNs and return None."""
    bounces = delivery.bounces
    if not bounces:
        return None

    covered = delivery.bounced_recipients() >= set(delivery.message.recipients)
    if mode == "reject" and covered:
        for bounce in bounces:
            bounce.trace.outcome = "rejected"
        return bounces[0].action.reply

    for index, bounce in enumerate(bounces, start=1):
        await _send_dsn(delivery, bounce, index, hostname, data_dir)
    return None


async def _send_dsn(
    delivery: Delivery, bounce: Bounce, index: int, hostname: str, data_dir: DataDir
) -> None:
    message = delivery.message
    if not message.mail_from:
        # Never bounce a bounce: a null sender gets no DSN (RFC 5321 6.1).
        bounce.trace.outcome = "no-dsn"
        bounce.trace.detail["reason"] = "the sender is null (MAIL FROM:<>)"
        return

    path = data_dir.outbox_path(f"{message.message_id}-{index}")
    await data_dir.write_atomic(path, [build_dsn(delivery, bounce, hostname)])
    bounce.trace.outcome = "dsn"
    bounce.trace.detail["dsn_path"] = str(path)
    log.info(
        "%s bounce from %s to %s for %s written to %s",
        message.message_id,
        bounce.action.sender,
        message.mail_from,
        ",".join(bounce.recipients),
        path,
    )


def build_dsn(delivery: Delivery, bounce: Bounce, hostname: str) -> bytes:
    """Return an RFC 3464 delivery status notification for one bounce."""
    message = delivery.message
    action = bounce.action
    report = MIMEMultipart("report", report_type="delivery-status")
    report["From"] = action.sender
    report["To"] = message.mail_from
    report["Subject"] = "Delivery Status Notification (Failure)"
    report["Date"] = format_datetime(datetime.now(UTC))
    report["Message-ID"] = make_msgid(domain=action.sender.rpartition("@")[2])
    report["Auto-Submitted"] = "auto-replied"

    names = ", ".join(bounce.recipients)
    text = f"Your message to {names} was not delivered.\n\n{action.message}\n"
    report.attach(MIMEText(text, "plain", "utf-8"))
    report.attach(_status_part(delivery, bounce, hostname))
    added = render_fields([*delivery.added_headers, *delivery.ses_headers])
    original = added + header_block(message.raw)
    report.attach(_headers_part(original))
    return report.as_bytes()


def _headers_part(original: bytes) -> Message:
    """Return the text/rfc822-headers part; base64 when the bytes are 8-bit."""
    if original.isascii():
        part = Message()
        part.set_type("text/rfc822-headers")
        part.set_payload(original.decode("ascii"))
        return part
    # 8-bit header bytes, UTF-8 or not, travel intact only as base64.
    part = MIMEApplication(original, "rfc822-headers", encode_base64)
    part.set_type("text/rfc822-headers")
    return part


def _status_part(delivery: Delivery, bounce: Bounce, hostname: str) -> Message:
    """Return the message/delivery-status part: one block, then one per recipient."""
    per_message = Message()
    per_message["Reporting-MTA"] = f"dns; {hostname}"
    per_message["Arrival-Date"] = format_datetime(delivery.message.received_at)

    blocks: list[Message | str] = [per_message]
    status = bounce.action.status_code or _default_status(bounce.action.smtp_reply_code)
    for recipient in bounce.recipients:
        block = Message()
        block["Final-Recipient"] = f"rfc822; {recipient}"
        block["Action"] = "failed" if status.startswith("5") else "delayed"
        block["Status"] = status
        block["Diagnostic-Code"] = f"smtp; {bounce.action.reply}"
        blocks.append(block)

    part = Message()
    part.set_type("message/delivery-status")
    part.set_payload(blocks)
    return part


def _default_status(reply_code: str) -> str:
    return f"{reply_code[0]}.0.0"
