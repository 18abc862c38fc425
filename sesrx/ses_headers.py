"""The header block SES puts on top of every message it receives.

In SES's order (reference section 4.5): Return-Path, Received, the spam and
virus verdicts (only where the rule scans), Received-SPF,
Authentication-Results, X-SES-RECEIPT and X-SES-DKIM-SIGNATURE. The last
two are opaque in SES's own mail; here they have the same shape and no
meaning, and the signature does not verify.
"""

from __future__ import annotations

import base64
import os

from sesrx.inbound import InboundMessage
from sesrx.message import Header, received_header

__all__ = ["ses_headers"]

AUTHSERV_ID = "amazonses.com"
# The selector seen in us-east-1 captures of X-SES-DKIM-SIGNATURE.
SES_SELECTOR = "ug7nbtf4gccmlpwj322ax3p6ow6yfsug"
SIGNED_HEADERS = (
    "From:To:Cc:Bcc:Subject:Date:Message-ID:MIME-Version:Content-Type:X-SES-RECEIPT"
)


def ses_headers(message: InboundMessage, hostname: str) -> tuple[Header, ...]:
    """Return SES's header block for ``message``, top first."""
    spf_text = _spf_text(message)
    return (
        Header("Return-Path", f"<{message.mail_from}>"),
        received_header(
            helo=message.helo,
            peer=message.peer,
            hostname=hostname,
            message_id=message.message_id,
            recipient=message.recipients[0],
            when=message.received_at,
        ),
        Header("X-SES-Spam-Verdict", message.scan.spam),
        Header("X-SES-Virus-Verdict", message.scan.virus),
        Header("Received-SPF", spf_text),
        _authentication_results(message, spf_text),
        Header("X-SES-RECEIPT", "AEFBQUFBQUFBQUFF" + _opaque(150)),
        Header("X-SES-DKIM-SIGNATURE", _ses_signature(message)),
    )


def _spf_text(message: InboundMessage) -> str:
    spf = message.spf
    domain, ip = spf.domain, spf.client_ip
    reason = {
        "pass": f"domain of {domain} designates {ip} as permitted sender",
        "fail": f"domain of {domain} does not designate {ip} as permitted sender",
        "softfail": f"domain of transitioning {domain} does not designate {ip} "
        "as permitted sender",
        "neutral": f"{ip} is neither permitted nor denied by domain of {domain}",
        "none": f"{domain} does not designate permitted sender hosts",
    }.get(spf.result, f"error in processing during lookup of {domain}")
    return (
        f"{spf.result} (spfCheck: {reason}) client-ip={ip}; "
        f"envelope-from={spf.envelope_from}; helo={spf.helo};"
    )


def _authentication_results(message: InboundMessage, spf_text: str) -> Header:
    """Return Authentication-Results (RFC 8601), one clause a line."""
    clauses = [f"{AUTHSERV_ID};", f"spf={spf_text}"]
    signatures = message.dkim.signatures
    clauses += [f"dkim={s.result} header.i=@{s.domain};" for s in signatures]
    if not signatures:
        clauses.append("dkim=none;")
    dmarc = message.dmarc
    clauses.append(f"dmarc={dmarc.result} header.from={dmarc.from_domain or 'none'};")
    return Header(
        "Authentication-Results", " ".join(clauses), folded="\r\n ".join(clauses)
    )


def _ses_signature(message: InboundMessage) -> str:
    stamp = int(message.received_at.timestamp())
    return (
        f"a=rsa-sha256; q=dns/txt; b={_opaque(256)}; c=relaxed/simple; "
        f"s={SES_SELECTOR}; d=amazonses.com; t={stamp}; v=1; bh={_opaque(32)}; "
        f"h={SIGNED_HEADERS};"
    )


def _opaque(size: int) -> str:
    return base64.b64encode(os.urandom(size)).decode("ascii")
