"""What happens to a message between the end of DATA and the reply.

The SMTP layer hands over an :class:`Arrival`; the pipeline gives it an id,
verifies DKIM, runs the rule set, settles bounces, writes the trace and
returns the reply line.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from sesrx.actions import Services
from sesrx.addresses import bare_address, split_addresses
from sesrx.bounces import settle_bounces
from sesrx.buckets import BucketStore
from sesrx.config import Config
from sesrx.dkim_check import UNSIGNED, DkimResult, verify_dkim
from sesrx.dmarc_check import DmarcResult, check_dmarc
from sesrx.errors import StorageError, describe_error
from sesrx.inbound import Delivery, InboundMessage
from sesrx.lambdas import LambdaRuntime
from sesrx.log_setup import current_message
from sesrx.message import Header, new_message_id, parse_headers, subject_of
from sesrx.rules import run_rule_set
from sesrx.scan import ScanResult, scan
from sesrx.ses_headers import ses_headers
from sesrx.sns import Publisher
from sesrx.spf_check import SpfResult, check_spf
from sesrx.storage import DataDir
from sesrx.threads import on_daemon_thread
from sesrx.trace import MessageTrace
from sesrx.zone import txt_records

__all__ = ["REPLY_RETRY", "Arrival", "Pipeline"]

log = logging.getLogger("sesrx.message")

# Messages whose DKIM signatures are checked, or large bodies scanned, at
# the same time; and the largest message scanned on the event loop.
DKIM_AT_ONCE = 2
SCAN_ON_LOOP_BYTES = 64 * 1024
REPLY_RETRY = "451 4.3.0 Temporary failure storing the message, try again later"


@dataclass(frozen=True, slots=True)
class Arrival:
    """A message as the SMTP session received it."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    helo: str
    peer: str
    tls: bool
    content: bytes
    # The configuration its recipients were accepted under, if not the latest.
    config: Config | None = None


class Pipeline:
    """Process accepted messages against one configuration."""

    def __init__(self, config: Config, data_dir: DataDir, lambdas: LambdaRuntime):
        self.config = config
        self.data_dir = data_dir
        self.lambdas = lambdas
        self._dkim_slots = asyncio.Semaphore(DKIM_AT_ONCE)
        self._verdicts = Verdicts()
        self._publisher: Publisher | None = None
        self.generation = 0
        self._open = asyncio.Event()
        self._open.set()
        self._quiet = asyncio.Event()
        self._quiet.set()
        self._busy = 0
        self._pauses = 0
        # Told of every message once it has its reply (the HTTP API listens).
        self.on_processed: Callable[[Delivery], None] | None = None
        self._buckets = BucketStore(data_dir, config.buckets)

    async def receive(self, arrival: Arrival) -> str:
        """Process one message and return the reply to DATA."""
        await self._open.wait()  # not while the data folder is being emptied
        self._busy += 1
        self._quiet.clear()
        # The rule set as it was when the recipients were accepted: a reload
        # during the transaction applies from the next message.
        config = arrival.config or self.config
        try:
            message = await self._inbound(arrival, config)
            # Every line logged from here on, here or in a handler, names the id.
            tagged = current_message.set(message.message_id)
            try:
                return await self._receive(message, config)
            finally:
                current_message.reset(tagged)
        finally:
            self._busy -= 1
            if not self._busy:
                self._quiet.set()

    @contextlib.asynccontextmanager
    async def paused(self) -> AsyncIterator[None]:
        """Hold new messages back, and wait for those being processed.

        Messages processed before the pause belong to an older generation:
        background handlers that end afterwards no longer write their trace.
        """
        self._pauses += 1
        self._open.clear()
        try:
            await self._quiet.wait()
            self.generation += 1
            yield
        finally:
            self._pauses -= 1
            if not self._pauses:  # the last of overlapping pauses reopens
                self._open.set()

    async def _receive(self, message: InboundMessage, config: Config) -> str:
        delivery = Delivery(
            message, ses_headers(message, config.server.hostname), _trace(message)
        )
        delivery.generation = self.generation
        services = Services(
            config,
            self.data_dir,
            self.lambdas,
            self.save_trace,
            self._sns(config),
            self.buckets(config),
        )
        try:
            await run_rule_set(config.rule_set, delivery, services)
            server = config.server
            bounce_reply = await settle_bounces(
                delivery, server.bounce_mode, server.hostname, self.data_dir
            )
            reply = bounce_reply or f"250 OK {message.message_id}"
            delivery.trace.reply = reply
            # Summarised before the next await, so that a background handler
            # finishing meanwhile does not change what the line says.
            summary = delivery.trace.summary()
            await self.save_trace(delivery)
        except Exception as exc:  # a StorageError, or a fault of sesrx's own
            if not isinstance(exc, StorageError):
                log.exception("%s processing failed", message.message_id)
            reply = self._failed(delivery, exc)
            summary = delivery.trace.summary()
            with contextlib.suppress(StorageError):
                await self.save_trace(delivery)  # where the folder allows it

        self._summarise(delivery, summary, reply)
        if self.on_processed is not None:
            self.on_processed(delivery)
        return reply

    def _sns(self, config: Config) -> Publisher:
        """Return the publisher for the configuration's topics."""
        if self._publisher is None or self._publisher.topics is not config.topics:
            self._publisher = Publisher(self.data_dir.root / "sns", config.topics)
        return self._publisher

    def buckets(self, config: Config | None = None) -> BucketStore:
        """Return the store of ``config``'s buckets (the latest config's by default).

        Stores of every configuration share one boto3 client per endpoint.
        """
        config = config or self.config
        self._buckets = self._buckets.for_buckets(config.buckets)
        return self._buckets

    async def save_trace(self, delivery: Delivery) -> None:
        """Write the message's trace file as it stands now.

        Calls that queue up behind a write share the next one: when many
        background handlers finish at once, the trace is written a few
        times, not once per handler.
        """
        if delivery.generation != self.generation:
            return  # forgotten by a clear of the data folder
        delivery.trace_version += 1
        wanted = delivery.trace_version
        await asyncio.sleep(0)  # let other changes due now join this write
        async with delivery.trace_lock:
            if delivery.trace_saved >= wanted:
                return
            version = delivery.trace_version
            path = self.data_dir.trace_path(delivery.message.message_id)
            try:
                await self.data_dir.write_json(path, delivery.trace.as_dict())
            except StorageError:
                log.exception("%s trace not written", delivery.message.message_id)
                raise
            delivery.trace_saved = version

    async def _inbound(self, arrival: Arrival, config: Config) -> InboundMessage:
        headers = parse_headers(arrival.content)
        dkim = await _dkim(arrival.content, headers, config, self._dkim_slots)
        spf = await _spf(arrival, config, self._verdicts)
        return InboundMessage(
            message_id=new_message_id(),
            received_at=datetime.now(UTC),
            mail_from=arrival.mail_from,
            recipients=arrival.rcpt_tos,
            helo=arrival.helo,
            peer=arrival.peer,
            tls=arrival.tls,
            raw=arrival.content,
            headers=headers,
            dkim=dkim,
            scan=await _scan(arrival.content, self._dkim_slots),
            spf=spf,
            dmarc=await _dmarc_off_loop(headers, spf, dkim, config, self._verdicts),
        )

    def _failed(self, delivery: Delivery, exc: Exception) -> str:
        error = str(exc) if isinstance(exc, StorageError) else describe_error(exc)
        delivery.trace.error = error
        delivery.trace.reply = REPLY_RETRY
        log.error(
            "%s failed, sender asked to retry: %s", delivery.message.message_id, error
        )
        return REPLY_RETRY

    @staticmethod
    def _summarise(delivery: Delivery, summary: str, reply: str) -> None:
        message = delivery.message
        log.info(
            "%s from=<%s> to=%s dkim=%s rules=%s reply=%r",
            message.message_id,
            message.mail_from,
            ",".join(message.recipients),
            message.dkim.verdict,
            summary or "-",
            reply,
        )


async def _dkim(
    raw: bytes, headers: tuple[Header, ...], config: Config, slots: asyncio.Semaphore
) -> DkimResult:
    signatures = [h.value for h in headers if h.name.lower() == "dkim-signature"]
    if not signatures:
        return UNSIGNED
    if len(raw) <= SCAN_ON_LOOP_BYTES and not config.dns.system:
        # A small message from the offline zone verifies in under a
        # millisecond: less than the trip to a thread costs.
        return verify_dkim(raw, txt_records(config), signatures)
    # Canonicalising a large body is slow pure Python: keep it off the loop,
    # and off the thread pool that file writes use, a few at a time.
    async with slots:
        return await on_daemon_thread(
            "sesrx-dkim", verify_dkim, raw, txt_records(config), signatures
        )


class Verdicts:
    """SPF and DMARC verdicts already reached from the offline zone.

    With the offline zone a verdict depends only on its inputs and the
    configuration, and load and integration tests send from a few senders:
    working each one out again took about a fifth of a small message's time.
    Real DNS may change its answers: its verdicts are not kept.
    """

    LIMIT = 4096

    def __init__(self) -> None:
        self._config: Config | None = None
        self._found: dict[tuple[object, ...], SpfResult | DmarcResult] = {}

    def get(
        self,
        config: Config,
        key: tuple[object, ...],
        reach: Callable[[], SpfResult | DmarcResult],
    ) -> SpfResult | DmarcResult:
        """Return the verdict for ``key`` under ``config``; ``reach`` it if new."""
        if config is not self._config or len(self._found) >= self.LIMIT:
            self._config, self._found = config, {}
        found = self._found.get(key)
        if found is None:
            found = self._found[key] = reach()
        return found


async def _spf(arrival: Arrival, config: Config, verdicts: Verdicts) -> SpfResult:
    args = (arrival.peer, arrival.mail_from, arrival.helo, config.dns_txt, config.dns)
    if not config.dns.system:
        # The offline zone answers at once.
        found = verdicts.get(config, ("spf", *args[:3]), lambda: check_spf(*args))
        assert isinstance(found, SpfResult)
        return found
    return await on_daemon_thread("sesrx-spf", check_spf, *args)


async def _dmarc_off_loop(
    headers: tuple[Header, ...],
    spf: SpfResult,
    dkim: DkimResult,
    config: Config,
    verdicts: Verdicts,
) -> DmarcResult:
    if not config.dns.system:
        key = (
            "dmarc",
            tuple(h.value for h in headers if h.name.lower() == "from"),
            spf.domain if spf.result == "pass" else None,
            tuple(s.domain for s in dkim.signatures if s.result == "pass"),
        )
        found = verdicts.get(config, key, lambda: _dmarc(headers, spf, dkim, config))
        assert isinstance(found, DmarcResult)
        return found
    # Real DNS may be slow: keep the event loop free meanwhile.
    return await on_daemon_thread("sesrx-dmarc", _dmarc, headers, spf, dkim, config)


def _dmarc(
    headers: tuple[Header, ...], spf: SpfResult, dkim: DkimResult, config: Config
) -> DmarcResult:
    # Every author counts: several From fields, or several addresses in one
    # (RFC 7489 section 6.6.1).
    authors = [
        bare_address(item)
        for header in headers
        if header.name.lower() == "from"
        for item in split_addresses(header.value)
    ]
    return check_dmarc(
        [author.rpartition("@")[2] if "@" in author else "" for author in authors],
        spf.domain if spf.result == "pass" else None,
        [s.domain for s in dkim.signatures if s.result == "pass"],
        txt_records(config),
    )


async def _scan(raw: bytes, slots: asyncio.Semaphore) -> ScanResult:
    if len(raw) <= SCAN_ON_LOOP_BYTES:
        return scan(raw)
    # Decoding the parts of a large message is slow: keep it off the loop.
    async with slots:
        return await on_daemon_thread("sesrx-scan", scan, raw)


def _trace(message: InboundMessage) -> MessageTrace:
    return MessageTrace(
        message_id=message.message_id,
        received_at=message.received_at.isoformat(timespec="milliseconds"),
        envelope={
            "mail_from": message.mail_from,
            "rcpt_tos": list(message.recipients),
            "helo": message.helo,
            "peer": message.peer,
            "tls": message.tls,
            "size": len(message.raw),
            "subject": subject_of(message.headers),
        },
        verdicts={
            "spf": message.spf.verdict,
            "dkim": message.dkim.verdict,
            "dmarc": message.dmarc.verdict,
            "dmarc_policy": message.dmarc.policy,
            "spam": message.scan.spam,
            "virus": message.scan.virus,
        },
        dkim_signatures=[
            {
                "domain": s.domain,
                "selector": s.selector,
                "algorithm": s.algorithm,
                "result": s.result,
                "reason": s.reason,
            }
            for s in message.dkim.signatures
        ],
    )
