"""The SMTP side: aiosmtpd hooks that answer as SES's inbound endpoint does.

This is the one place that speaks both vocabularies: aiosmtpd's session
and envelope come in, an :class:`~sesrx.pipeline.Arrival` goes out, and
errors become SMTP replies.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
from typing import Any, AnyStr

from aiosmtpd.smtp import SMTP, Envelope, Session, syntax

from sesrx.data_reader import read_data
from sesrx.ip_filters import REPLY_BLOCKED, is_blocked
from sesrx.message import header_size
from sesrx.pipeline import REPLY_RETRY, Arrival, Pipeline
from sesrx.rules import recipient_reply, refusal_reason
from sesrx.scan import PIECE

__all__ = ["SesHandler", "SesSMTP"]

log = logging.getLogger("sesrx.smtp")

# SES's banner reads "220 <host> ESMTP Amazon SES" (reference section 7.1).
IDENT = "ESMTP Amazon SES"
REPLY_OK = "250 Ok"
# Addresses end up in Return-Path, Received and DSN headers, where a control
# character (a bare CR above all) would start a header of the sender's own.
REPLY_BAD_SENDER = "553 5.1.7 Bad sender address syntax"
# An oversize message, at MAIL FROM (SIZE=) or at the end of DATA; SES's
# reply is not documented, this is the RFC 3463 code for it.
REPLY_TOO_LARGE = "552 5.3.4 Message too large"
# A CR or LF alone: sesrx's header reader, dkimpy and a consumer's MIME
# parser could each split such lines differently (and they are how SMTP
# smuggling works), so the message is refused rather than stored.
REPLY_BARE_LINE_BREAK = "554 5.6.0 Message has a bare CR or LF; end lines with CRLF"
REPLY_BAD_RECIPIENT = "553 5.1.3 Bad recipient address syntax"
# Session limits (RFC 5321 4.5.3.1.10 for recipients, 4.5.3.2 for time).
REPLY_TOO_MANY_RECIPIENTS = "452 4.5.3 Too many recipients"
REPLY_HEADER_TOO_LARGE = "552 5.3.4 Message header too large"
REPLY_BUSY = "421 4.7.0 Too many connections, try again later"
REPLY_TIMEOUT = "421 4.4.2 Timeout, closing connection"
# aiosmtpd's wording, kept: SMTP lines are at most 1000 bytes.
REPLY_LINE_TOO_LONG = "500 Line too long (see RFC5321 4.5.3.1.6)"
MAX_LINE = 1000  # bytes of a line of DATA, CRLF included
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class SesHandler:
    """aiosmtpd handler: check recipients at RCPT, run the rules at DATA."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.in_flight = 0
        self.idle = asyncio.Event()
        self.idle.set()
        self._processing: set[asyncio.Task[str]] = set()

    async def handle_EHLO(  # noqa: N802 (aiosmtpd's hook name)
        self, server: SMTP, session: Session, envelope: Envelope,
        hostname: str, responses: list[str],
    ) -> list[str]:  # fmt: skip
        """Answer EHLO without AUTH, which SES does not offer."""
        session.host_name = hostname
        return [line for line in responses if not line.startswith("250-AUTH")]

    async def handle_PROXY(  # noqa: N802 (aiosmtpd's hook name)
        self, server: SMTP, session: Session, envelope: Envelope, proxy_data: Any
    ) -> bool:
        """Apply the IP filters to the client the PROXY header names."""
        address = _peer(session)
        if not is_blocked(self.pipeline.config.ip_filters, address):
            return True
        if server.transport is not None:
            _refuse(server.transport, address)  # aiosmtpd then closes it
        return False

    async def handle_MAIL(  # noqa: N802 (aiosmtpd's hook name)
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        """Accept any sender, as SES does, if it can go into a header."""
        if _has_control(address):
            return REPLY_BAD_SENDER
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return REPLY_OK

    async def handle_RCPT(  # noqa: N802 (aiosmtpd's hook name)
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        """Accept a recipient that an enabled rule of the rule set matches."""
        if _has_control(address):
            return REPLY_BAD_RECIPIENT
        if address.lower() in (known.lower() for known in envelope.rcpt_tos):
            return REPLY_OK  # the same recipient twice gets one copy
        config = self.pipeline.config
        if len(envelope.rcpt_tos) >= config.server.limits.max_recipients:
            return REPLY_TOO_MANY_RECIPIENTS
        tls = _uses_tls(server, session)
        refusal = recipient_reply(
            config.rule_set, config.verified_domains, address, tls
        )
        if refusal:
            reason = refusal_reason(
                config.rule_set, config.verified_domains, address, tls
            )
            log.info("%s refused RCPT TO:<%s>: %s", _peer(session), address, reason)
            return refusal

        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        if not hasattr(envelope, "sesrx_config"):
            envelope.sesrx_config = config  # type: ignore[attr-defined]
        return REPLY_OK

    async def handle_DATA(  # noqa: N802 (aiosmtpd's hook name)
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        """Run the rule set; reply once every synchronous action has run."""
        content = envelope.original_content
        if content is None:
            content = envelope.content if isinstance(envelope.content, bytes) else b""
        if await _has_bare_line_break(content):
            log.info("%s refused a message with a bare CR or LF", _peer(session))
            return REPLY_BARE_LINE_BREAK
        limits = self.pipeline.config.server.limits
        if header_size(content, limits.max_header_size) > limits.max_header_size:
            log.info(
                "%s refused a message with a header block too large", _peer(session)
            )
            return REPLY_HEADER_TOO_LARGE
        arrival = Arrival(
            # The null reverse-path arrives as the text "<>" (RFC 5321 4.5.5).
            mail_from="" if envelope.mail_from == "<>" else envelope.mail_from or "",
            rcpt_tos=tuple(envelope.rcpt_tos),
            helo=_helo_name(session.host_name),
            peer=_peer(session),
            tls=_uses_tls(server, session),
            content=content,
            config=getattr(envelope, "sesrx_config", None),
        )
        # The time limits are for the client; processing has its own.
        if isinstance(server, SesSMTP):
            server.pause_timeout()
        processing = self._start(arrival)
        try:
            # A client that leaves before the reply does not stop the rule
            # set halfway (an object stored, no trace, a handler cut off):
            # the message is processed to the end all the same.
            return await asyncio.shield(processing)
        except asyncio.CancelledError:
            log.info("%s left before the reply to DATA", arrival.peer)
            raise
        finally:
            if isinstance(server, SesSMTP):
                server.resume_timeout()

    def _start(self, arrival: Arrival) -> asyncio.Task[str]:
        """Process a message on its own task, counted until it ends."""
        self.in_flight += 1
        self.idle.clear()
        task = asyncio.get_running_loop().create_task(self._process(arrival))
        self._processing.add(task)
        task.add_done_callback(self._ended)
        return task

    def _ended(self, task: asyncio.Task[str]) -> None:
        self._processing.discard(task)
        self.in_flight -= 1
        if not self.in_flight:
            self.idle.set()

    async def _process(self, arrival: Arrival) -> str:
        try:
            return await self.pipeline.receive(arrival)
        except Exception:
            log.exception(
                "%s message from <%s> failed", arrival.peer, arrival.mail_from
            )
            return REPLY_RETRY


class SesSMTP(SMTP):
    """aiosmtpd's protocol, registering each session with its server."""

    def __init__(self, handler: SesHandler, sessions: set[SesSMTP], **kwargs: Any):
        super().__init__(handler, **kwargs)
        self._sessions = sessions
        config = handler.pipeline.config
        # Behind a proxy the peer is the proxy: filters wait for its header.
        self._filters = () if config.server.proxy_protocol else config.ip_filters
        self._limits = config.server.limits
        self._refused = False
        self._peer = "unknown"
        self._in_data = False  # from 354 until the reply to the message
        self._closing = False  # close once that reply is sent

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Refuse a client an IP filter blocks; remember the others."""
        peer = transport.get_extra_info("peername")
        address = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        if is_blocked(self._filters, address):
            # Refused before the greeting, and nothing else (SES: IP filters).
            self._refused = True
            _refuse(transport, address)
            transport.close()
            return
        if len(self._sessions) >= self._limits.max_sessions:
            self._refused = True
            log.warning(
                "%s refused: %d sessions open (server.max_sessions)",
                address,
                len(self._sessions),
            )
            _say(transport, REPLY_BUSY)
            transport.close()
            return

        self._peer = address
        self._sessions.add(self)
        super().connection_made(transport)
        if self._handler_coroutine is not None:
            self._handler_coroutine.add_done_callback(_note_lost)

    def connection_lost(self, error: Exception | None) -> None:
        """Forget the session."""
        if self._refused:
            return
        self._sessions.discard(self)
        super().connection_lost(error)

    async def push(self, status: AnyStr) -> None:
        """Send a reply; aiosmtpd's size refusals get SES's wording."""
        if isinstance(status, str):
            # aiosmtpd repeats an unknown command word as sent: a CR or an
            # escape byte in it would break the reply line.
            status = _CONTROL.sub("?", status)
            if status.startswith("552 Error:"):
                peer = _peer(self.session) if self.session else self._peer
                log.info("%s refused an oversize message: %s", peer, status[11:])
                status = REPLY_TOO_LARGE
        await super().push(status)
        if isinstance(status, str) and status.startswith("354"):
            self._reset_timeout(self._limits.data_timeout)

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:  # noqa: N802 (aiosmtpd's name)
        """Take the message into one buffer, then run the DATA hook.

        The checks, replies and hook are aiosmtpd's; only the reading differs
        (see :mod:`sesrx.data_reader`).
        """
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return

        await self.push("354 End data with <CR><LF>.<CR><LF>")
        self._in_data = True
        try:
            await self._take_message()
        finally:
            self._in_data = False
            if self._closing:
                self.close()

    async def _take_message(self) -> None:
        """Read the message, run the DATA hook and reply."""
        assert self.envelope is not None
        try:
            data = await read_data(self._reader, self.data_size_limit, MAX_LINE)
        except asyncio.CancelledError:
            log.info("%s connection lost during DATA", self._peer)
            self._writer.close()
            raise
        if data.too_long or data.too_much:
            self._set_post_data_state()  # type: ignore[no-untyped-call]
            if data.too_much:
                log.info("%s refused an oversize message", self._peer)
            reply = REPLY_TOO_LARGE if data.too_much else REPLY_LINE_TOO_LONG
            await self.push(reply)
            return

        self.envelope.content = self.envelope.original_content = data.content
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()  # type: ignore[no-untyped-call]
        await self.push(status)

    def pause_timeout(self) -> None:
        """Stop the client's clock while the message is processed."""
        # aiosmtpd keeps one timer per session, armed at each command.
        if self._timeout_handle is not None:
            self._timeout_handle.cancel()

    def resume_timeout(self) -> None:
        """Give the client a command's time again, for what follows the reply."""
        if self.transport is not None and not self.transport.is_closing():
            self._reset_timeout()

    def _timeout_cb(self) -> None:
        """Tell a client that took too long why it is cut off (RFC 5321 4.5.3.2)."""
        log.info("%s timed out", _peer(self.session) if self.session else self._peer)
        if self.transport is not None:
            _say(self.transport, REPLY_TIMEOUT)
        super()._timeout_cb()  # type: ignore[no-untyped-call]

    def close(self, *, now: bool = False) -> None:
        """Say the service is closing (RFC 5321 3.8) and close the connection.

        A session sending a message, or waiting for the reply to it, gets
        that reply first, unless ``now``; it starts nothing after it.
        """
        if self._in_data and not now:
            self._closing = True
            return
        transport = self.transport
        if isinstance(transport, asyncio.WriteTransport) and not transport.is_closing():
            transport.write(b"421 4.3.2 Service shutting down\r\n")
            transport.close()


def _refuse(transport: asyncio.BaseTransport, address: str) -> None:
    """Tell a client an IP filter blocks that it is refused."""
    log.info("%s refused by an IP filter", address)
    _say(transport, REPLY_BLOCKED)


def _say(transport: asyncio.BaseTransport, reply: str) -> None:
    """Write a reply outside the command loop (before or instead of it)."""
    if isinstance(transport, asyncio.WriteTransport) and not transport.is_closing():
        transport.write(f"{reply}\r\n".encode())


def _note_lost(task: asyncio.Task[None]) -> None:
    """Take a lost connection as a session's normal end; log anything else.

    aiosmtpd logs a lost connection, then raises it from the session's task,
    which nobody awaits: asyncio would print a traceback for it.
    """
    if task.cancelled():
        return
    error = task.exception()
    if error is not None and not isinstance(error, ConnectionError):
        log.error("session failed", exc_info=error)


def _uses_tls(server: SMTP, session: Session) -> bool:
    """Say whether the session runs over TLS: after STARTTLS, or from the start."""
    transport = server.transport
    implicit = transport is not None and transport.get_extra_info("ssl_object")
    return session.ssl is not None or bool(implicit)


# Larger messages are checked on a worker thread, a slice at a time, so
# that counting 40 MB never holds the event loop for long.
CHECK_ON_LOOP_BYTES = 64 * 1024


async def _has_bare_line_break(content: bytes) -> bool:
    if len(content) <= CHECK_ON_LOOP_BYTES:
        return _bare_line_break(content, 0, len(content))
    return await asyncio.to_thread(_bare_line_break_in_slices, content)


def _bare_line_break_in_slices(content: bytes) -> bool:
    start = 0
    while start < len(content):
        # Each slice ends just after an LF, so no CRLF pair is cut in two.
        newline = content.find(b"\n", start + PIECE)
        end = len(content) if newline < 0 else newline + 1
        if _bare_line_break(content, start, end):
            return True
        start = end
    return False


def _bare_line_break(content: bytes, start: int, end: int) -> bool:
    pairs = content.count(b"\r\n", start, end)
    return (
        content.count(b"\n", start, end) != pairs
        or content.count(b"\r", start, end) != pairs
    )


def _has_control(address: str) -> bool:
    return any(char < " " or char == "\x7f" for char in address)


def _helo_name(argument: str | None) -> str:
    """Return the EHLO name as one printable token, safe inside a header.

    EHLO takes one domain or address literal (RFC 5321 4.1.1.1); whatever a
    client sent after it, or bytes such as a bare CR, must not reach the
    Received header.
    """
    words = (argument or "").split()
    # Parentheses would open or close the comment of the Received header;
    # a domain is at most 255 characters (RFC 5321 4.5.3.1.2).
    token = (
        "".join(c for c in words[0] if "!" <= c <= "~" and c not in "()")
        if words
        else ""
    )
    return token[:255] or "unknown"


def _peer(session: Session) -> str:
    """Return the client's address: from the PROXY header, else the socket's."""
    proxied = getattr(session.proxy_data, "src_addr", None)
    # A client on a Unix socket behind the proxy comes as a path: no address.
    if isinstance(proxied, ipaddress.IPv4Address | ipaddress.IPv6Address):
        return str(proxied)
    # Typed as a string by aiosmtpd, but it holds the socket's peer name.
    peer: object = session.peer
    if isinstance(peer, tuple):
        return str(peer[0])
    return str(peer or "unknown")
