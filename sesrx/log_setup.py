"""sesrx's own log: text for people or JSON for machines, ids on every line.

Lines written while a message is processed (by sesrx, or by a Lambda
handler it calls) carry the message id; lines a handler writes also carry
its function name and request id.
"""

from __future__ import annotations

import contextvars
import logging
import os
import re
import sys
from typing import TextIO

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

from sesrx.lambda_logs import current

__all__ = ["MessageTag", "TextFormatter", "configure_logging", "current_message"]

current_message: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "sesrx_message", default=None
)

_TEXT = "%(asctime)s %(levelname)-7s %(name)s%(tag)s: %(message)s"
_JSON = "%(levelname)s %(name)s %(message)s"


class MessageTag(logging.Filter):
    """Give each record ``message_id``, ``function``, ``request_id`` and ``tag``.

    ``tag`` is what the text format shows: `` [<message id> <function>
    <request id>]`` for a handler's lines; sesrx's own lines about a message
    start with its id already.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        invocation = current()
        message_id = current_message.get()
        record.message_id = message_id
        record.function = invocation.function_name if invocation else None
        record.request_id = invocation.request_id if invocation else None
        if invocation is None:
            record.tag = ""
        else:
            ids = [message_id, invocation.function_name, invocation.request_id]
            record.tag = " [" + " ".join(part for part in ids if part) + "]"
        return True


class TextFormatter(logging.Formatter):
    """The text format, with control characters shown as escapes.

    What a handler prints or raises, and much of what sesrx logs, comes
    from the message: an escape sequence could rewrite the terminal line,
    and a line break could start a line that looks like sesrx's own.
    """

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802
        text = super().formatMessage(record)
        # Only lines marked as several lines keep their breaks: the start-up
        # block as it is, a handler's traceback indented, so that no line of
        # it can pass for one of sesrx's. Any other may quote a handler or a
        # message.
        several = getattr(record, "multiline", False)
        indented = getattr(record, "indented", False)
        unsafe = _CONTROL if several or indented else _CONTROL_AND_BREAK
        text = unsafe.sub(lambda match: repr(match.group())[1:-1], text)
        return text.replace("\n", "\n" + INDENT) if indented else text


def _own_stderr() -> TextIO:
    """Return a stream to where stderr goes, on a descriptor of sesrx's own.

    A handler that closes descriptor 2 would otherwise hand that number to
    the next SMTP connection, and sesrx's log would be written to a client.
    """
    try:
        descriptor = os.dup(sys.stderr.fileno())
    except (AttributeError, OSError, ValueError):  # no descriptor (captured)
        return sys.stderr
    return open(  # noqa: SIM115 (open for the life of the process)
        descriptor,
        "w",
        buffering=1,
        encoding=sys.stderr.encoding or "utf-8",
        errors="backslashreplace",
    )


# What starts each further line of an indented record.
INDENT = "    | "
# Control characters but tab and line feed; then line feed too.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_CONTROL_AND_BREAK = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def configure_logging(verbose: bool, form: str = "text") -> None:
    """Send log records to stderr in ``form`` (``text`` or ``json``)."""
    handler = logging.StreamHandler(_own_stderr())
    handler.addFilter(MessageTag())
    if form == "json":
        handler.setFormatter(
            JsonFormatter(
                _JSON,
                rename_fields={"levelname": "level", "name": "logger"},
                reserved_attrs=[*RESERVED_ATTRS, "tag", "multiline", "indented"],
                timestamp="time",
            )
        )
    else:
        handler.setFormatter(TextFormatter(_TEXT, "%Y-%m-%d %H:%M:%S"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    logging.getLogger("sesrx").setLevel(logging.DEBUG if verbose else logging.INFO)
    # aiosmtpd logs each command and reply at DEBUG; -v shows the conversation.
    logging.getLogger("mail.log").setLevel(
        logging.DEBUG if verbose else logging.WARNING
    )
    logging.getLogger("aiohttp").setLevel(logging.WARNING)
