"""Spam and virus verdicts from the industry's test strings.

SES's scanners are not available offline. A message carrying the GTUBE
string gets spam FAIL, one carrying the EICAR test file virus FAIL, which
is how mail filters are tested against real scanners too. The strings are
looked for in the raw bytes and in every decoded MIME part, since an
attachment is usually base64.
"""

from __future__ import annotations

import binascii
import email
import email.policy
import quopri
import re
from dataclasses import dataclass

__all__ = ["CLEAN", "ScanResult", "scan"]

# Generic Test for Unsolicited Bulk Email, as SpamAssassin publishes it.
GTUBE = b"XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
# The EICAR anti-virus test file (eicar.org).
EICAR = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
# Parts decoded for the search, at most; a message has rarely more.
MAX_PARTS = 100
# Only parts in these encodings can hide a string from the raw search.
_ENCODED = re.compile(
    rb"content-transfer-encoding:\s*(?:base64|quoted-printable)", re.IGNORECASE
)


@dataclass(frozen=True, slots=True)
class ScanResult:
    """The spam and virus verdicts of a message, as SES spells them."""

    spam: str = "PASS"
    virus: str = "PASS"


CLEAN = ScanResult()


def scan(raw: bytes) -> ScanResult:
    """Return FAIL for a verdict whose test string the message carries."""
    found_spam, found_virus = GTUBE in raw, EICAR in raw
    if not (found_spam and found_virus) and _ENCODED.search(raw):
        for payload in _decoded_parts(raw):
            found_spam = found_spam or GTUBE in payload
            found_virus = found_virus or EICAR in payload

    return ScanResult(
        spam="FAIL" if found_spam else "PASS",
        virus="FAIL" if found_virus else "PASS",
    )


def _decoded_parts(raw: bytes) -> list[bytes]:
    """Return the decoded payloads of the message's leaf parts."""
    try:
        message = email.message_from_bytes(raw, policy=email.policy.compat32)
        parts = [part for part in message.walk() if not part.is_multipart()]
        return [_payload(part) for part in parts[:MAX_PARTS]]
    except Exception:  # a broken MIME structure leaves only the raw search
        return []


def _payload(part: email.message.Message) -> bytes:
    """Decode a part, reading a folded Content-Transfer-Encoding too."""
    encoding = " ".join(str(part.get("content-transfer-encoding", "")).split()).lower()
    payload = part.get_payload()
    if not isinstance(payload, str):
        return b""
    if encoding == "base64":
        try:
            return binascii.a2b_base64(_base64_text(payload))
        except binascii.Error:  # a lone trailing character
            return b""
    if encoding == "quoted-printable":
        return quopri.decodestring(payload.encode("ascii", errors="replace"))
    return payload.encode("utf-8", errors="surrogateescape")


def _base64_text(payload: str) -> bytes:
    """Keep base64 characters only, padded, so that a2b_base64 never fails."""
    text = re.sub(r"[^A-Za-z0-9+/]", "", payload)
    return (text + "=" * (-len(text) % 4)).encode("ascii")
