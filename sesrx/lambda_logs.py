"""Route what a Lambda handler prints or logs, as CloudWatch Logs would.

While a handler runs, a context variable names its invocation. Writes to
``sys.stdout``/``sys.stderr`` and records of non-sesrx loggers made in that
context go to ``<data_dir>/logs/<function>.log``; printed lines also go to
sesrx's own log, where :mod:`sesrx.log_setup` tags them with the function
name and request id.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import sys
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

__all__ = [
    "Capture",
    "FunctionLog",
    "InvocationLog",
    "capture",
    "current",
]

log = logging.getLogger("sesrx.lambda")

_current: contextvars.ContextVar[InvocationLog | None] = contextvars.ContextVar(
    "sesrx_invocation", default=None
)
_guard = threading.local()


class FunctionLog:
    """An append-only log file shared by every invocation of one function."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._stream: TextIO | None = None
        self._failing = False

    def write(self, request_id: str, *texts: str) -> None:
        """Append lines in CloudWatch's ``time<TAB>request id<TAB>text`` form.

        A log that cannot be written (disk full, folder gone) is reported once
        and otherwise ignored: it must not fail the handler or the message.
        """
        stamp = (
            datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        )
        with self._lock:
            try:
                if self._stream is not None and _unlinked(self._stream):
                    self._close()  # the data folder was emptied meanwhile
                if self._stream is None:
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                    self._stream = self.path.open(
                        "a", encoding="utf-8", errors="backslashreplace"
                    )
                self._stream.write(
                    "".join(f"{stamp}\t{request_id}\t{text}\n" for text in texts)
                )
                self._stream.flush()
            except OSError as exc:
                self._failed(exc)
            else:
                self._failing = False

    def close(self) -> None:
        """Close the file; a later write opens it again."""
        with self._lock:
            self._close()

    def _failed(self, exc: OSError) -> None:
        if not self._failing:
            log.warning("cannot write %s: %s", self.path, exc)
        self._failing = True
        self._close()

    def _close(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()


def _unlinked(stream: TextIO) -> bool:
    return os.fstat(stream.fileno()).st_nlink == 0


@dataclass(slots=True)
class InvocationLog:
    """The invocation a piece of code runs in, and its unfinished line."""

    function_name: str
    request_id: str
    sink: FunctionLog
    _partial: list[str] = field(default_factory=list)

    def printed(self, text: str) -> None:
        """Take text written to stdout or stderr; log each complete line."""
        self._partial.append(text)
        if "\n" not in text:
            return
        lines = "".join(self._partial).split("\n")
        unfinished = lines.pop()
        self._partial = [unfinished] if unfinished else []
        for line in lines:
            self.sink.write(self.request_id, line)
            log.info("%s", line)

    def flush(self) -> None:
        """Write out a last line that had no line break."""
        if self._partial:
            self.printed("\n")


def current() -> InvocationLog | None:
    """Return the invocation the calling code runs in, if any."""
    return _current.get()


def capture(invocation: InvocationLog) -> contextvars.Context:
    """Return a context in which output belongs to ``invocation``."""
    context = contextvars.copy_context()
    context.run(_current.set, invocation)
    return context


class _Stream:
    """Stand in for stdout or stderr; hand a handler's writes to its log."""

    def __init__(self, original: TextIO) -> None:
        self.original = original

    def write(self, text: str) -> int:
        invocation = _current.get()
        if invocation is None or getattr(_guard, "busy", False):
            return self.original.write(text)
        _guard.busy = True
        try:
            invocation.printed(text)
        finally:
            _guard.busy = False
        return len(text)

    def flush(self) -> None:
        self.original.flush()

    def __getattr__(self, name: str) -> object:
        return getattr(self.original, name)


class _RecordSink(logging.Handler):
    """Copy records of a handler's own loggers into its function log."""

    def emit(self, record: logging.LogRecord) -> None:
        invocation = _current.get()
        if invocation is None or record.name.startswith("sesrx"):
            return
        # A bad record (wrong % arguments, say) must not raise into the
        # handler; logging's own handlers report it and carry on.
        try:
            text = f"[{record.levelname}]\t{record.getMessage()}"
            if record.exc_info:
                text += "\n" + logging.Formatter().formatException(record.exc_info)
        except Exception:
            self.handleError(record)
            return
        invocation.sink.write(invocation.request_id, text)


class Capture:
    """Install the stream stand-ins and the record sink while servers run."""

    _users = 0
    _lock = threading.Lock()
    _sink = _RecordSink()

    @classmethod
    def install(cls) -> None:
        """Start routing (counted, so several servers may share a process)."""
        with cls._lock:
            cls._users += 1
            if cls._users == 1:
                logging.getLogger().addHandler(cls._sink)
        cls.ensure()

    @classmethod
    def ensure(cls) -> None:
        """Put the stand-ins back if something replaced ``sys.stdout`` since."""
        if not isinstance(sys.stdout, _Stream):
            sys.stdout = _Stream(sys.stdout)
        if not isinstance(sys.stderr, _Stream):
            sys.stderr = _Stream(sys.stderr)

    @classmethod
    def uninstall(cls) -> None:
        """Stop routing when the last server stops."""
        with cls._lock:
            cls._users -= 1
            if cls._users == 0:
                for name in ("stdout", "stderr"):
                    stream = getattr(sys, name)
                    if isinstance(stream, _Stream):
                        setattr(sys, name, stream.original)
                logging.getLogger().removeHandler(cls._sink)
