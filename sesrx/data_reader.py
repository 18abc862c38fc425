"""Read the DATA of a message into one buffer, as lines arrive.

aiosmtpd keeps every line of DATA as an object of its own and joins them at
the end: for a 40 MB message that is half a million objects, several times
the message in memory, and a join and an un-stuffing pass that hold the
event loop for a tenth of a second or more. Here each line goes straight
into one growing buffer, without its transparency dot (RFC 5321 4.5.2),
and the loop is given up between reads as usual.

The rules are aiosmtpd's: lines end with CRLF only; a line longer than the
limit (1000 bytes in SMTP, CRLF included, a transparency dot not), or data
past the size limit, is read to its end and then refused (500 and 552, after
the final dot, RFC 5321 4.2.5).
"""

from __future__ import annotations

import asyncio
import io
from dataclasses import dataclass

__all__ = ["DataRead", "read_data"]

END = b".\r\n"


@dataclass(slots=True)
class DataRead:
    """What the client sent between 354 and the final dot."""

    content: bytes = b""
    too_long: bool = False  # a line past the line length limit
    too_much: bool = False  # more bytes than the size limit


async def read_data(
    reader: asyncio.StreamReader, size_limit: int | None, line_limit: int
) -> DataRead:
    """Read lines up to the lone dot; un-stuff them into one buffer."""
    # BytesIO hands over its buffer at the end without copying it (CPython
    # shares it when nothing else refers to it), where a bytearray would
    # need a second copy of the whole message.
    buffer = io.BytesIO()
    result = DataRead()
    size = 0
    continued = False  # the previous read ended inside a line
    while True:
        try:
            line = await reader.readuntil(b"\r\n")
        except asyncio.LimitOverrunError as exc:
            # No line end within the reader's limit: a piece of a long line.
            line = await reader.read(exc.consumed)
        complete = line.endswith(b"\r\n")
        if line == END and not continued:
            break
        size += len(line)
        if not (result.too_long or result.too_much):
            if size_limit and size > size_limit:
                result.too_much = True
            elif continued or not complete or _length(line) > line_limit:
                result.too_long = True
        if result.too_long or result.too_much:
            buffer.seek(0)  # nothing of a refused message is kept
            buffer.truncate()
        elif line.startswith(b"."):
            buffer.write(memoryview(line)[1:])
        else:
            buffer.write(line)
        continued = not complete

    result.content = buffer.getvalue()
    return result


def _length(line: bytes) -> int:
    """Return a line's length as RFC 5321 4.5.3.1.6 counts it: with its CRLF,
    without the dot added for transparency."""
    return len(line) - 1 if line.startswith(b".") else len(line)
