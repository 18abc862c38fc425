"""Read a received message's header block without rewriting anything.

SES hands handlers the header values as they were sent, with line folding
removed; the ``email`` package would re-serialise them, so the header block
is read here directly from the bytes.
"""

from __future__ import annotations

import base64
import os
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.header import decode_header, make_header

__all__ = [
    "Header",
    "header_block",
    "header_size",
    "new_message_id",
    "parse_headers",
    "received_header",
    "render_fields",
    "smtp_date",
    "subject_of",
]

# Header fields past this many bytes are not read into events: a message of
# 40 MB of header lines would otherwise hold the event loop for seconds.
# (SES itself marks notifications past about 10 KB of headers as truncated.)
MAX_HEADER_BYTES = 256 * 1024
# A field name is printable ASCII without ":" (RFC 5322 section 3.6.8);
# white space before the colon is the obsolete syntax of section 4.5.
_FIELD = re.compile(rb"([!-9;-~]+)[ \t]*:")
# A line break followed by neither a folded line nor a field: the empty line,
# or a line with no field name, where parse_headers stops reading.
_HEADER_ENDS = re.compile(rb"\r\n(?![ \t]|[!-9;-~]+[ \t]*:)")
# How far past the limit a line is read to tell whether it is a field.
_NAME_ROOM = 1024
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = (
    "Jan",
    "Feb",
    "Mar",
    "Apr",
    "May",
    "Jun",
    "Jul",
    "Aug",
    "Sep",
    "Oct",
    "Nov",
    "Dec",
)


@dataclass(frozen=True, slots=True)
class Header:
    """One header field: its name as sent and its unfolded value."""

    name: str
    value: str
    # How sesrx folds a header it writes itself; None for received headers.
    folded: str | None = field(default=None, compare=False, repr=False)


def new_message_id() -> str:
    """Return a new id in the form of SES's inbound message ids.

    Real ids are 25 bytes in lower-case base32hex whose last byte is 0x01
    (reference section 7.3), so they always end in 01, 81, g1 or o1.
    """
    return base64.b32hexencode(os.urandom(24) + b"\x01").decode("ascii").lower()


def parse_headers(raw: bytes) -> tuple[Header, ...]:
    """Return the header fields at the top of ``raw``, in order.

    Reading stops at the empty line, or at the first line that is neither a
    field nor a continuation, which then counts as the start of the body.
    A leading mbox ``From`` line is skipped. Nothing here raises.
    """
    fields: list[tuple[bytes, list[bytes]]] = []
    for index, line in enumerate(_lines(raw)):
        if index == 0 and line.startswith(b"From "):
            continue
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1][1].append(line)
            continue
        match = _FIELD.match(line)
        if not match:
            break
        fields.append((match.group(1), [line[match.end() :]]))

    return tuple(_header(name, parts) for name, parts in fields)


def header_size(raw: bytes, limit: int) -> int:
    """Return the header block's length in bytes, or ``limit + 1`` if longer.

    The block ends where :func:`parse_headers` stops: the empty line, or the
    first line that is neither a field nor a folded line, so a message that
    has no empty line, or starts with one, is not all header. Lines end with
    CRLF (the only line break SMTP lets through).
    """
    end = raw.find(b"\r\n\r\n", 0, limit + 4)
    if end >= 0:  # the usual case: at most ``limit``
        return end + 2
    start = 0
    if raw.startswith(b"From "):  # an mbox line
        newline = raw.find(b"\r\n")
        start = len(raw) if newline < 0 else newline + 2
    if not _FIELD.match(raw, start):
        return start
    found = _HEADER_ENDS.search(raw, start, limit + 2 + _NAME_ROOM)
    if found is None:
        size = len(raw)
    elif _FIELD.match(raw, found.end()):  # a name too long to see in the window
        size = limit + 1
    else:
        size = found.start() + 2
    return size if size <= limit else limit + 1


def header_block(raw: bytes) -> bytes:
    """Return the bytes of the header block, without the empty line."""
    return raw[: _header_end(raw) + 1]


def _lines(raw: bytes) -> list[bytes]:
    """Split the header block into lines without their line breaks."""
    end = _header_end(raw)
    return [line.rstrip(b"\r") for line in raw[:end].split(b"\n")]


def _header_end(raw: bytes) -> int:
    """Return where the header block ends, reading at most MAX_HEADER_BYTES."""
    limit = MAX_HEADER_BYTES + 3
    ends = (raw.find(b"\n\r\n", 0, limit), raw.find(b"\n\n", 0, limit))
    found = [pos for pos in ends if pos >= 0]
    return min([*found, len(raw), MAX_HEADER_BYTES])


def _header(name: bytes, parts: list[bytes]) -> Header:
    # Unfolding removes the line break; a folding tab reads as one space,
    # as in the values SES shows in mail.headers (reference section 4.2).
    unfolded = parts[0] + b"".join(
        b" " + part[1:] if part.startswith(b"\t") else part for part in parts[1:]
    )
    return Header(
        name=name.decode("ascii"),
        value=unfolded.strip(b" \t").decode("utf-8", errors="replace"),
    )


def received_header(
    *,
    helo: str,
    peer: str,
    hostname: str,
    message_id: str,
    recipient: str,
    when: datetime,
) -> Header:
    """Return the ``Received`` field SES puts on top of a message."""
    parts = [
        f"from {helo} ({helo} [{peer}])",
        f"by {hostname} with SMTP id {message_id}",
        f"for {recipient};",
        smtp_date(when),
    ]
    return Header("Received", " ".join(parts), folded="\r\n ".join(parts))


def smtp_date(when: datetime) -> str:
    """Format ``when`` as SES does: ``Thu, 03 Dec 2026 13:17:18 +0000 (UTC)``."""
    utc = when.astimezone(UTC)
    return (
        f"{_DAYS[utc.weekday()]}, {utc.day:02d} {_MONTHS[utc.month - 1]} {utc.year} "
        f"{utc:%H:%M:%S} +0000 (UTC)"
    )


def render_fields(headers: list[Header]) -> bytes:
    """Serialise headers sesrx made itself, folded where SES folds them."""
    lines = [f"{h.name}: {h.folded or h.value}\r\n" for h in headers]
    return "".join(lines).encode("utf-8")


def subject_of(headers: tuple[Header, ...]) -> str:
    """Return the first Subject field, with encoded words decoded."""
    for header in headers:
        if header.name.lower() == "subject":
            if "=?" not in header.value:
                return header.value  # no encoded words (RFC 2047) to decode
            try:
                decoded = str(make_header(decode_header(header.value)))
            except (ValueError, LookupError, UnicodeError):
                return header.value
            # An encoded word can decode to a lone surrogate ("=?utf-7?...");
            # it cannot be written as UTF-8, so it becomes U+FFFD.
            return decoded.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return ""
