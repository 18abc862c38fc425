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
import re

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
    spf_parts = _spf_parts(message)
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
        _folded("Received-SPF", spf_parts),
        _authentication_results(message, spf_parts),
        Header("X-SES-RECEIPT", "AEFBQUFBQUFBQUFF" + _opaque(150)),
        Header("X-SES-DKIM-SIGNATURE", _ses_signature(message)),
    )


def _folded(name: str, parts: list[str]) -> Header:
    """Return a header whose parts go on lines of their own when stored.

    Each part is a few hundred bytes at most, so no stored line passes the
    998 of RFC 5322 section 2.1.1.
    """
    return Header(name, " ".join(parts), folded="\r\n ".join(parts))


def _spf_parts(message: InboundMessage) -> list[str]:
    spf = message.spf
    domain, ip = _domain(spf.domain), _token(spf.client_ip)
    reason = {
        "pass": f"domain of {domain} designates {ip} as permitted sender",
        "fail": f"domain of {domain} does not designate {ip} as permitted sender",
        "softfail": f"domain of transitioning {domain} does not designate {ip} "
        "as permitted sender",
        "neutral": f"{ip} is neither permitted nor denied by domain of {domain}",
        "none": f"{domain} does not designate permitted sender hosts",
    }.get(spf.result, f"error in processing during lookup of {domain}")
    return [
        f"{spf.result} (spfCheck: {reason})",
        f"client-ip={ip};",
        f"envelope-from={_token(spf.envelope_from)};",
        f"helo={_token(spf.helo)};",
    ]


def _authentication_results(message: InboundMessage, spf_parts: list[str]) -> Header:
    """Return Authentication-Results (RFC 8601), one clause a line."""
    clauses = [f"{AUTHSERV_ID};", f"spf={spf_parts[0]}", *spf_parts[1:]]
    signatures = message.dkim.signatures
    clauses += [f"dkim={s.result} header.i=@{_domain(s.domain)};" for s in signatures]
    if not signatures:
        clauses.append("dkim=none;")
    dmarc = message.dmarc
    clauses.append(f"dmarc={dmarc.result} header.from={_domain(dmarc.from_domain)};")
    return _folded("Authentication-Results", clauses)


# What may stand unquoted in these headers; anything else taken from the
# client (a DKIM d=, a From domain, an address) could fake a result.
_DOMAIN = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,251}[A-Za-z0-9])?")
_TOKEN = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~@:\[\]-]{1,320}")


def _domain(value: str) -> str:
    return value if _DOMAIN.fullmatch(value) else "invalid"


def _token(value: str) -> str:
    """Return ``value`` as is when it is one safe token, else a quoted string."""
    if _TOKEN.fullmatch(value):
        return value
    quoted = value[:320].replace("\\", "\\\\").replace('"', '\\"')
    return f'"{quoted}"'


def _ses_signature(message: InboundMessage) -> str:
    stamp = int(message.received_at.timestamp())
    return (
        f"a=rsa-sha256; q=dns/txt; b={_opaque(256)}; c=relaxed/simple; "
        f"s={SES_SELECTOR}; d=amazonses.com; t={stamp}; v=1; bh={_opaque(32)}; "
        f"h={SIGNED_HEADERS};"
    )


def _opaque(size: int) -> str:
    return base64.b64encode(os.urandom(size)).decode("ascii")
