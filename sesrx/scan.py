"""Spam and virus verdicts from the industry's test strings.

SES's scanners are not available offline. A message carrying the GTUBE
string gets spam FAIL, one carrying the EICAR test file virus FAIL, which
is how mail filters are tested against real scanners too. The strings are
looked for in the raw bytes and in every decoded MIME part, since an
attachment is usually base64.
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = ["CLEAN", "ScanResult", "scan"]

# Generic Test for Unsolicited Bulk Email, as SpamAssassin publishes it.
GTUBE = b"XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
# The EICAR anti-virus test file (eicar.org).
EICAR = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
# Parts decoded for the search, at most; a message has rarely more.
MAX_PARTS = 100
# Encoded bodies are decoded this many bytes at a time, so that a 40 MB
# attachment needs little memory and other threads get the interpreter
# between pieces: a C call over a piece holds it throughout, and the event
# loop waits for it at every turn (a megabyte held it about 3 ms a time,
# and a small message's reply took tens of milliseconds meanwhile).
PIECE = 128 * 1024
# Each decoded piece is searched with the end of the one before it, so that
# a test string split across two pieces is still found.
_OVERLAP = max(len(GTUBE), len(EICAR)) - 1
# A part whose body can hide a string from the raw search (folding allowed).
_ENCODED = re.compile(
    rb"^content-transfer-encoding:\s*(base64|quoted-printable)",
    re.IGNORECASE | re.MULTILINE,
)
# Searches of adjacent pieces overlap by this much, so that a field cut by
# a piece boundary is found whole in one of them.
_FIELD_REACH = 256
_BASE64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_NOT_BASE64 = bytes(byte for byte in range(256) if byte not in _BASE64_ALPHABET)


@dataclass(frozen=True, slots=True)
class ScanResult:
    """The spam and virus verdicts of a message, as SES spells them."""

    spam: str = "PASS"
    virus: str = "PASS"


CLEAN = ScanResult()


def scan(raw: bytes) -> ScanResult:
    """Return FAIL for a verdict whose test string the message carries."""
    found_spam = _find(raw, GTUBE, 0) >= 0
    found_virus = _find(raw, EICAR, 0) >= 0
    if not (found_spam and found_virus):
        for decoded in _decoded_pieces(raw):
            found_spam = found_spam or GTUBE in decoded
            found_virus = found_virus or EICAR in decoded
            if found_spam and found_virus:
                break

    return ScanResult(
        spam="FAIL" if found_spam else "PASS",
        virus="FAIL" if found_virus else "PASS",
    )


def _decoded_pieces(raw: bytes) -> Iterator[bytes]:
    """Yield the decoded bodies of base64 and quoted-printable parts, in pieces.

    A part's body starts after the blank line that ends its header and runs
    to the next line starting with ``--`` (a boundary), or to the end.
    """
    for number, match in enumerate(_encoded_headers(raw)):
        if number == MAX_PARTS:
            return
        start = _find(raw, b"\r\n\r\n", match.end())
        if start < 0:
            continue
        start += 4
        end = _find(raw, b"\r\n--", start)
        end = len(raw) if end < 0 else end
        base64 = match.group(1).lower() == b"base64"
        yield from _pieces(raw, start, end, base64)


def _find(raw: bytes, wanted: bytes, start: int) -> int:
    """Return where ``wanted`` is in ``raw`` from ``start``, or -1.

    A piece at a time, like the rest of the scan: one search through 40 MB
    holds the interpreter for tens of milliseconds.
    """
    while start < len(raw):
        end = start + PIECE + len(wanted)
        found = raw.find(wanted, start, end)
        if found >= 0:
            return found
        start += PIECE
    return -1


def _encoded_headers(raw: bytes) -> Iterator[re.Match[bytes]]:
    """Yield the Content-Transfer-Encoding fields that name base64 or QP.

    Searched a piece at a time: one search through 40 MB would hold the
    interpreter, and the event loop with it, for a tenth of a second.
    """
    start, last = 0, -1
    while start < len(raw):
        end = min(len(raw), start + PIECE + _FIELD_REACH)
        for match in _ENCODED.finditer(raw, start, end):
            if match.start() > last:  # not already found in the overlap
                last = match.start()
                yield match
        start += PIECE


def _pieces(raw: bytes, start: int, end: int, base64: bool) -> Iterator[bytes]:
    tail = carry = b""
    while start < end:
        stop = min(end, start + PIECE)
        if stop < end:  # cut after a line end, so no escape is split
            cut = raw.rfind(b"\r\n", start, stop)
            stop = cut + 2 if cut > start else stop
        chunk = raw[start:stop]
        if base64:
            # Base64 characters only, in groups of four; the rest waits for
            # the next piece, and "=" padding is dropped and made up at the end.
            text = carry + chunk.translate(None, _NOT_BASE64)
            whole = len(text) - len(text) % 4
            text, carry = text[:whole], text[whole:]
            if stop == end and len(carry) > 1:  # one character holds no byte
                text += carry + b"=" * (-len(carry) % 4)
            decoded = binascii.a2b_base64(text)
        else:
            decoded = binascii.a2b_qp(chunk)
        yield tail + decoded
        tail = decoded[-_OVERLAP:]
        start = stop
