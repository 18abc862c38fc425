"""Build the JSON objects SES hands to Lambda functions and topics.

Key names and order follow SES's published samples (reference section 4).
"""

from __future__ import annotations

from typing import Any

from sesrx.addresses import bare_address, split_addresses
from sesrx.config import ReceiptRule
from sesrx.inbound import Delivery
from sesrx.message import Header

__all__ = ["lambda_event", "mail_object", "notification", "receipt_object"]

# Header bytes listed in mail.headers (SES Developer Guide, notification
# contents: "headersTruncated").
MAX_HEADER_BYTES = 10 * 1024
# commonHeaders keys, in SES's order, and the header each one reads.
_ADDRESS_LISTS = {
    "from": "from",
    "sender": "sender",
    "replyTo": "reply-to",
    "to": "to",
    "cc": "cc",
    "bcc": "bcc",
}
_COMMON_ORDER = (
    "returnPath",
    "from",
    "sender",
    "replyTo",
    "date",
    "to",
    "cc",
    "bcc",
    "messageId",
    "subject",
)


def mail_object(delivery: Delivery, scanned: bool = True) -> dict[str, Any]:
    """Return ``mail``: the envelope, the headers and ``commonHeaders``."""
    message = delivery.message
    headers = delivery.headers(scanned)
    listed = _within_limit(headers)
    first = _first_values(headers)
    return {
        "timestamp": _timestamp(delivery),
        "source": message.mail_from,
        "messageId": message.message_id,
        "destination": _destination(first),
        "headersTruncated": len(listed) < len(headers),
        "headers": [{"name": h.name, "value": h.value} for h in listed],
        "commonHeaders": _common_headers(first),
    }


def receipt_object(
    delivery: Delivery,
    rule: ReceiptRule,
    recipients: tuple[str, ...],
    action: dict[str, Any],
) -> dict[str, Any]:
    """Return ``receipt``: verdicts, this rule's recipients and the action."""
    message = delivery.message
    dkim, scan = message.dkim, message.scan
    receipt: dict[str, Any] = {
        "timestamp": _timestamp(delivery),
        "processingTimeMillis": delivery.processing_time_millis(),
        "recipients": list(recipients),
        # A rule with scan_enabled false gets DISABLED (reference section 5).
        "spamVerdict": {"status": scan.spam if rule.scan_enabled else "DISABLED"},
        "virusVerdict": {"status": scan.virus if rule.scan_enabled else "DISABLED"},
        "spfVerdict": {"status": message.spf.verdict},
        "dkimVerdict": {"status": dkim.verdict},
        "dmarcVerdict": {"status": message.dmarc.verdict},
    }
    # dmarcPolicy is there only when DMARC fails (reference section 4.3).
    if message.dmarc.verdict == "FAIL" and message.dmarc.policy:
        receipt["dmarcPolicy"] = message.dmarc.policy
    receipt["action"] = action
    return receipt


def notification(
    mail: dict[str, Any], receipt: dict[str, Any], content: str | None = None
) -> dict[str, Any]:
    """Return the ``Received`` notification SES publishes to a topic."""
    message = {"notificationType": "Received", "mail": mail, "receipt": receipt}
    if content is not None:
        message["content"] = content
    return message


def lambda_event(mail: dict[str, Any], receipt: dict[str, Any]) -> dict[str, Any]:
    """Wrap ``mail`` and ``receipt`` in the event a Lambda function gets."""
    return {
        "Records": [
            {
                "eventSource": "aws:ses",
                "eventVersion": "1.0",
                "ses": {"mail": mail, "receipt": receipt},
            }
        ]
    }


def _within_limit(headers: list[Header]) -> list[Header]:
    """Return the leading headers that fit in SES's 10 KB of notification.

    SES says headers past about 10 KB are left out and headersTruncated set;
    how it cuts is not documented, so whole headers are kept, in order, while
    they fit.
    """
    size = 0
    for count, header in enumerate(headers):
        size += len(header.name) + len(header.value.encode("utf-8")) + 4
        if size > MAX_HEADER_BYTES:
            return headers[:count]
    return headers


def _timestamp(delivery: Delivery) -> str:
    stamp = delivery.message.received_at.isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


def _first_values(headers: list[Header]) -> dict[str, str]:
    """Return the first value of each header name, by lower-case name."""
    first: dict[str, str] = {}
    for header in headers:
        first.setdefault(header.name.lower(), header.value)
    return first


def _destination(first: dict[str, str]) -> list[str]:
    addresses = []
    for name in ("to", "cc"):
        if name in first:
            addresses += [bare_address(item) for item in split_addresses(first[name])]
    return [address for address in addresses if address]


def _common_headers(first: dict[str, str]) -> dict[str, Any]:
    common: dict[str, Any] = {}
    if "return-path" in first:
        common["returnPath"] = bare_address(first["return-path"])
    for key, name in _ADDRESS_LISTS.items():
        if name in first:
            common[key] = split_addresses(first[name])
    for key, name in (
        ("date", "date"),
        ("messageId", "message-id"),
        ("subject", "subject"),
    ):
        if name in first:
            common[key] = first[name]

    return {key: common[key] for key in _COMMON_ORDER if key in common}
