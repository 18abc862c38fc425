"""The messages this server has processed, as the HTTP API lists them.

Each entry is a summary: envelope, subject, reply, the rules that matched,
and how many background Lambda calls are still running. Bodies stay on
disk; the received bytes of recent messages are also kept in memory, up to
a fixed budget, for messages no S3 action stored. Entries past the limit
are forgotten, oldest first; their files stay in the data folder.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import time
from collections import OrderedDict, deque
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sesrx.errors import describe_error
from sesrx.storage import read_regular_file
from sesrx.trace import TRACE_READ_LIMIT, MessageTrace

__all__ = ["MESSAGE_ID", "Entry", "Mailbox", "Query", "keeps_raw", "read_traces"]

log = logging.getLogger("sesrx.api")

# Inbound message ids: 40 characters of lower-case base32hex.
MESSAGE_ID = re.compile(r"[0-9a-v]{40}")
# Received bytes kept in memory, all messages together.
RAW_BUDGET = 64 * 1024 * 1024
# Events queued for one live listener (the web page); past this many it is
# told to reload instead.
STREAM_QUEUE = 1000
# Changes remembered for waits; one that falls further behind looks again.
CHANGES_KEPT = 4096
# Characters of a subject kept in the list (the trace file has all of it).
SUBJECT_KEPT = 500
# Memory for entries, all together; the oldest go first past it.
ENTRY_BUDGET = 64 * 1024 * 1024


@dataclass(slots=True)
class Entry:
    """One processed message, without its body."""

    message_id: str
    received_at: str
    timestamp: float
    mail_from: str
    recipients: tuple[str, ...]
    subject: str
    size: int
    reply: str
    rules: tuple[str, ...]  # names of the rules that matched
    pending: int = 0  # background Lambda calls still running

    @property
    def weight(self) -> int:
        """Return roughly how many bytes the entry holds."""
        texts = (self.subject, self.mail_from, self.reply, *self.recipients)
        return 400 + sum(len(text) + 50 for text in texts)

    @property
    def done(self) -> bool:
        """Say whether every action, background ones included, has ended."""
        return self.pending == 0

    def summary(self) -> dict[str, Any]:
        """Return the entry as JSON-ready data."""
        return {
            "id": self.message_id,
            "received_at": self.received_at,
            "mail_from": self.mail_from,
            "recipients": list(self.recipients),
            "subject": self.subject,
            "size": self.size,
            "reply": self.reply,
            "rules": list(self.rules),
            "done": self.done,
        }

    @classmethod
    def from_message_trace(cls, trace: MessageTrace, pending: int) -> Entry:
        """Build the entry of a message just answered."""
        envelope = trace.envelope
        return cls(
            message_id=trace.message_id,
            received_at=trace.received_at,
            timestamp=datetime.fromisoformat(trace.received_at).timestamp(),
            mail_from=envelope["mail_from"],
            recipients=tuple(envelope["rcpt_tos"]),
            subject=_shorten(envelope["subject"]),
            size=envelope["size"],
            reply=trace.reply,
            rules=tuple(rule.name for rule in trace.rules if rule.status == "matched"),
            pending=pending,
        )

    @classmethod
    def from_trace(cls, trace: Any, pending: int = 0) -> Entry:
        """Build an entry from a trace file; ValueError if it is not one.

        Trace files of an earlier run are read back at start, and anyone
        who can write the data folder can put anything there.
        """
        if not isinstance(trace, dict):
            raise ValueError("not a JSON object")
        envelope = _member(trace, "envelope", dict)
        message_id = _member(trace, "message_id", str)
        if not MESSAGE_ID.fullmatch(message_id):
            raise ValueError(f"not a message id: {message_id[:60]!r}")
        received_at = _member(trace, "received_at", str)
        recipients = _member(envelope, "rcpt_tos", list)
        rules = _member(trace, "rules", list)
        size = envelope.get("size", 0)
        if not all(isinstance(r, str) for r in recipients):
            raise ValueError("rcpt_tos: expected addresses")
        if not all(
            isinstance(r, dict) and isinstance(r.get("name"), str) for r in rules
        ):
            raise ValueError("rules: expected rules with names")
        if type(size) is not int:
            raise ValueError("size: expected a whole number")
        return cls(
            message_id=message_id,
            received_at=received_at,
            timestamp=datetime.fromisoformat(received_at).timestamp(),
            mail_from=_member(envelope, "mail_from", str),
            recipients=tuple(recipients),
            subject=_shorten(envelope.get("subject", "")),
            size=size,
            reply=_member(trace, "reply", str),
            rules=tuple(r["name"] for r in rules if r.get("status") == "matched"),
            pending=pending,
        )


def _member(mapping: dict[str, Any], key: str, kind: type) -> Any:
    value = mapping.get(key)
    if not isinstance(value, kind):
        raise ValueError(f"{key}: expected {kind.__name__}")
    return value


def _shorten(subject: Any) -> str:
    """Return at most SUBJECT_KEPT characters of a subject, for the list."""
    if not isinstance(subject, str):
        return ""
    return subject if len(subject) <= SUBJECT_KEPT else subject[:SUBJECT_KEPT] + "…"


@dataclass(frozen=True, slots=True)
class Query:
    """Which messages a list or a wait is about; empty fields match all."""

    recipient: str | None = None  # an address, or a domain without "@"
    sender: str | None = None
    rule: str | None = None
    since: float | None = None  # seconds since the epoch

    def matches(self, entry: Entry) -> bool:
        """Say whether ``entry`` is one of the messages asked for."""
        if self.since is not None and entry.timestamp < self.since:
            return False
        if self.rule is not None and self.rule not in entry.rules:
            return False
        if self.sender is not None and not _address_matches(
            self.sender, entry.mail_from
        ):
            return False
        return self.recipient is None or any(
            _address_matches(self.recipient, rcpt) for rcpt in entry.recipients
        )


def _address_matches(wanted: str, address: str) -> bool:
    wanted, address = wanted.lower(), address.lower()
    if "@" in wanted:
        return wanted == address
    return address.rpartition("@")[2] == wanted


class Mailbox:
    """Processed messages, newest last, bounded; waiters and live listeners."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._entries: OrderedDict[str, Entry] = OrderedDict()
        self._raw: OrderedDict[str, bytes] = OrderedDict()
        self._raw_bytes = 0
        self._entry_bytes = 0
        self._changed = asyncio.Event()
        # Recent changes, numbered, for waits to catch up with.
        self._sequence = 0
        self._epoch = 0
        self._changes: deque[tuple[int, Entry]] = deque(maxlen=CHANGES_KEPT)
        self._listeners: set[asyncio.Queue[dict[str, Any]]] = set()

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, entry: Entry, raw: bytes | None) -> None:
        """Record a message whose reply has been given, with its bytes if any."""
        self._entries[entry.message_id] = entry
        self._entry_bytes += entry.weight
        self._trim()
        if raw is not None:
            self._keep_raw(entry.message_id, raw)
        self._announce("message", entry)

    def _trim(self) -> None:
        # Bounded in number and in memory: a flood of messages with long
        # subjects or a thousand recipients each must not grow without end.
        while len(self._entries) > self.limit or self._entry_bytes > ENTRY_BUDGET:
            oldest_id, oldest = self._entries.popitem(last=False)
            self._entry_bytes -= oldest.weight
            self._drop_raw(oldest_id)

    def settle(self, message_id: str) -> None:
        """Note that a message's background Lambda calls have all ended."""
        entry = self._entries.get(message_id)
        if entry is not None and entry.pending:
            entry.pending = 0
            self._announce("message", entry)

    def get(self, message_id: str) -> Entry | None:
        """Return the entry of ``message_id``, if it is remembered."""
        return self._entries.get(message_id)

    def raw(self, message_id: str) -> bytes | None:
        """Return the bytes received for ``message_id``, if still in memory."""
        return self._raw.get(message_id)

    def newest(self, query: Query) -> Iterator[Entry]:
        """Yield the entries ``query`` matches, newest first."""
        for entry in reversed(self._entries.values()):
            if query.matches(entry):
                yield entry

    def select(
        self, query: Query, limit: int, offset: int = 0
    ) -> tuple[int, list[Entry]]:
        """Return how many entries match and one page of them, newest first."""
        matched = list(self.newest(query))
        return len(matched), matched[offset : offset + limit]

    async def wait(
        self, query: Query, count: int, timeout: float
    ) -> tuple[bool, list[Entry]]:
        """Wait until ``count`` matching messages are done, or time runs out.

        Returns whether enough arrived, and the done messages that match,
        oldest first.
        """
        deadline = time.monotonic() + timeout
        found: dict[str, Entry] = {}
        epoch, seen = -1, 0
        while True:
            # After the first look, only what changed since is looked at:
            # each change wakes every wait.
            if epoch != self._epoch or not self._remembers(seen):
                found = {e.message_id: e for e in self.newest(query) if e.done}
            else:
                for entry in self._changed_since(seen):
                    if entry.done and query.matches(entry):
                        found[entry.message_id] = entry
            epoch, seen = self._epoch, self._sequence
            left = deadline - time.monotonic()
            if len(found) >= count or left <= 0:
                done = sorted(found.values(), key=lambda entry: entry.timestamp)
                return len(found) >= count, done
            changed = self._changed
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), left)

    def pending(self, query: Query) -> int:
        """Return how many matching messages still have background calls running."""
        return sum(1 for entry in self.newest(query) if not entry.done)

    def _remembers(self, seen: int) -> bool:
        if seen == self._sequence:
            return True
        return bool(self._changes) and self._changes[0][0] <= seen + 1

    def _changed_since(self, seen: int) -> list[Entry]:
        changed = []
        for sequence, entry in reversed(self._changes):
            if sequence <= seen:
                break
            changed.append(entry)
        return changed

    def clear(self) -> None:
        """Forget every message."""
        self._entries.clear()
        self._entry_bytes = 0
        self._raw.clear()
        self._raw_bytes = 0
        self._announce("clear")

    def listen(self) -> asyncio.Queue[dict[str, Any]]:
        """Return a queue that receives every change from now on."""
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(STREAM_QUEUE)
        self._listeners.add(queue)
        return queue

    def unlisten(self, queue: asyncio.Queue[dict[str, Any]]) -> None:
        """Stop sending changes to ``queue``."""
        self._listeners.discard(queue)

    def restore(self, entries: list[Entry]) -> list[Entry]:
        """Put entries from an earlier run before the ones of this run."""
        current = list(self._entries.values())
        known = {entry.message_id for entry in current}
        older = [entry for entry in entries if entry.message_id not in known]
        self._entries = OrderedDict(
            (entry.message_id, entry) for entry in [*older, *current]
        )
        self._entry_bytes = sum(entry.weight for entry in self._entries.values())
        self._trim()
        self._announce("reload")
        return older

    def _announce(self, kind: str, entry: Entry | None = None) -> None:
        if entry is None:
            self._epoch += 1  # cleared or reloaded: waits look at everything
        else:
            self._sequence += 1
            self._changes.append((self._sequence, entry))
        # Wake every waiter; each checks again whether it has enough.
        self._changed.set()
        self._changed = asyncio.Event()
        if not self._listeners:
            return  # no page open: no summary to build
        data = entry.summary() if entry is not None else {}
        event = {"event": kind, "data": data}
        for queue in list(self._listeners):
            try:
                queue.put_nowait(event)
            except asyncio.QueueFull:
                # A listener that stopped reading: nothing closes its stream,
                # so rather than drop it, swap its backlog for one reload.
                _replace_with_reload(queue)

    def _keep_raw(self, message_id: str, raw: bytes) -> None:
        if not keeps_raw(len(raw)):
            return
        self._raw[message_id] = raw
        self._raw_bytes += len(raw)
        while self._raw_bytes > RAW_BUDGET:
            oldest = next(iter(self._raw))
            self._drop_raw(oldest)

    def _drop_raw(self, message_id: str) -> None:
        raw = self._raw.pop(message_id, None)
        if raw is not None:
            self._raw_bytes -= len(raw)


def keeps_raw(size: int) -> bool:
    """Say whether the bytes of a message of ``size`` are kept in memory."""
    return size <= RAW_BUDGET // 4


def _replace_with_reload(queue: asyncio.Queue[dict[str, Any]]) -> None:
    while not queue.empty():
        queue.get_nowait()
    queue.put_nowait({"event": "reload", "data": {}})


def read_traces(folder: Path, limit: int) -> list[Entry]:
    """Read the newest ``limit`` trace files in ``folder``, oldest first.

    Only regular files of a sensible size are read (not links, pipes or
    devices), and a file that is not a trace is skipped with a warning.
    """
    try:
        with os.scandir(folder) as scan:
            files = [
                (stat.st_mtime, item.path)
                for item in scan
                if item.name.endswith(".json")
                and MESSAGE_ID.fullmatch(item.name[: -len(".json")])
                and item.is_file(follow_symlinks=False)
                and (stat := item.stat(follow_symlinks=False)).st_size
                <= TRACE_READ_LIMIT
            ]
    except OSError:
        return []
    files.sort()
    entries = []
    for _, path in files[-limit:]:
        try:
            text = read_regular_file(path, TRACE_READ_LIMIT)
            entries.append(Entry.from_trace(json.loads(text)))
        except (OSError, ValueError, RecursionError, MemoryError) as exc:
            log.warning("skipping trace %s: %s", path, describe_error(exc))
    entries.sort(key=lambda entry: entry.timestamp)
    return entries
