"""A received message and the state of its trip through the rule set."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import datetime

from sesrx.config import BounceAction
from sesrx.dkim_check import DkimResult
from sesrx.dmarc_check import DmarcResult
from sesrx.message import Header, render_fields
from sesrx.scan import ScanResult
from sesrx.spf_check import SpfResult
from sesrx.trace import ActionTrace, MessageTrace

__all__ = ["Bounce", "Delivery", "InboundMessage"]


@dataclass(frozen=True, slots=True)
class InboundMessage:
    """What arrived over SMTP, in the rules layer's words."""

    message_id: str
    received_at: datetime
    mail_from: str
    recipients: tuple[str, ...]
    helo: str
    peer: str
    tls: bool
    raw: bytes
    headers: tuple[Header, ...]
    dkim: DkimResult
    scan: ScanResult
    spf: SpfResult
    dmarc: DmarcResult
    started: float = field(default_factory=time.monotonic)


@dataclass(frozen=True, slots=True)
class Bounce:
    """A bounce action that ran, the recipients it bounced, its trace entry."""

    action: BounceAction
    recipients: tuple[str, ...]
    trace: ActionTrace


@dataclass(slots=True)
class Delivery:
    """One message on its way through the rules: headers added so far,
    bounces recorded, and the trace being written."""

    message: InboundMessage
    ses_headers: tuple[Header, ...]
    trace: MessageTrace
    added_headers: list[Header] = field(default_factory=list)
    bounces: list[Bounce] = field(default_factory=list)
    trace_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    trace_version: int = 0  # changes asked to be saved
    trace_saved: int = 0  # the last of them on disk
    generation: int = 0  # of the data folder, which a clear starts anew

    def add_header(self, header: Header) -> None:
        """Prepend a header that later actions and rules see."""
        self.added_headers.insert(0, header)

    def headers(self, scanned: bool = True) -> list[Header]:
        """Return every header as stored: added, SES's, then the original."""
        return [*self.added_headers, *self._ses(scanned), *self.message.headers]

    def stored_parts(self, scanned: bool = True) -> list[bytes]:
        """Return the stored object: new header lines, then the bytes received."""
        prefix = render_fields([*self.added_headers, *self._ses(scanned)])
        return [prefix, self.message.raw]

    def _ses(self, scanned: bool) -> list[Header]:
        # A rule that does not scan gets no X-SES-Spam/Virus-Verdict headers.
        return [
            header
            for header in self.ses_headers
            if scanned or not header.name.startswith(("X-SES-Spam", "X-SES-Virus"))
        ]

    def processing_time_millis(self) -> int:
        """Return milliseconds since reception, at least 1 (as SES reports)."""
        elapsed = (time.monotonic() - self.message.started) * 1000
        return max(1, int(elapsed))

    def bounced_recipients(self) -> set[str]:
        """Return every recipient some bounce action covered."""
        return {rcpt for bounce in self.bounces for rcpt in bounce.recipients}
