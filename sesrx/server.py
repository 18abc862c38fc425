"""The server: start listening, serve, and shut down cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from sesrx.buckets import BucketStore
from sesrx.config import ApiConfig, Config
from sesrx.dmarc_check import load_suffix_list
from sesrx.errors import SesrxError, StartError
from sesrx.inbound import Delivery
from sesrx.lambda_logs import Capture
from sesrx.lambdas import LambdaRuntime
from sesrx.listen import Acceptor, bind
from sesrx.mailbox import Entry, Mailbox, keeps_raw, read_traces
from sesrx.pipeline import Pipeline
from sesrx.reload import watch
from sesrx.setup_notice import write_setup_notifications
from sesrx.smtp import IDENT, SesHandler, SesSMTP
from sesrx.storage import DataDir
from sesrx.tls import server_context
from sesrx.trace import MessageTrace, load_trace, stored_objects
from sesrx.validate import bucket_problem
from sesrx.workers import Primary, Shared, Worker

if TYPE_CHECKING:
    from sesrx.api import Api

__all__ = ["Server", "host_port"]

log = logging.getLogger("sesrx.server")

PROXY_TIMEOUT = 5.0
# Messages remembered when the API is off (for wait_for in-process).
MAX_MESSAGES = 10_000


class Server:
    """One sesrx instance: an SMTP listener running a configuration."""

    def __init__(self, config: Config, shared: Shared | None = None) -> None:
        self.config = config
        # One process of several serving the same port, or None for the only one.
        self.shared = shared
        role = shared.role if shared is not None else None
        self.primary = role if isinstance(role, Primary) else None
        self.worker = role if isinstance(role, Worker) else None
        self.data_dir = DataDir(
            config.data_dir, durable=config.server.durability == "fsync"
        )
        self.lambdas = LambdaRuntime(self.data_dir, config.server.lambda_timeout)
        self.pipeline = Pipeline(config, self.data_dir, self.lambdas)
        self.handler = SesHandler(self.pipeline)
        api = config.server.api
        self.mailbox = Mailbox(api.max_messages if api else MAX_MESSAGES)
        self.pipeline.on_processed = self._processed
        self.lambdas.on_settled = self.mailbox.settle
        # Made at start, after the SMTP port is open: aiohttp takes a while
        # to import, and mail should not wait for it.
        self.api: Api | None = None
        self.port: int | None = None
        self.tls_port: int | None = None
        self._acceptors: list[Acceptor] = []
        self._clear_lock = asyncio.Lock()
        self._clearing: set[asyncio.Task[int]] = set()
        self._sessions: set[SesSMTP] = set()
        self._watcher: asyncio.Task[None] | None = None
        self._warming: asyncio.Future[None] | None = None

    async def start(self) -> None:
        """Prepare the data folder and start listening."""
        worker = self.worker
        if self.shared is None:  # else prepared before the fork
            self.data_dir.prepare()
        if worker is None:
            await write_setup_notifications(self.config, self.buckets)
        try:
            self._listen()
        except StartError:
            self._close_listeners()
            raise
        if self.config.source is not None:
            watcher = watch(self.config.source, lambda: self.config, self.apply)
            self._watcher = asyncio.get_running_loop().create_task(watcher)
        if self.shared is not None:
            await self.shared.role.start(self)
        elif self.config.server.workers > 1:
            log.warning("server.workers is for sesrx serve; here one process serves")
        if worker is None and self.config.server.api is not None:
            await self._start_api(self.config.server.api)
        Capture.install()
        self._warming = asyncio.get_running_loop().run_in_executor(
            None, load_suffix_list
        )
        if worker is None:
            earlier = await asyncio.to_thread(
                read_traces, self.data_dir.root / "traces", self.mailbox.limit
            )
            self.mailbox.restore(earlier)

    def _listen(self) -> None:
        """Accept SMTP connections: STARTTLS offered, or TLS from the first byte."""
        server = self.config.server
        tls = server.tls
        shared = self.shared
        if shared is not None:
            context = shared.tls_context
        else:
            context = server_context(tls, server.hostname) if tls else None

        sockets = shared.sockets if shared else bind(server.host, server.port)
        self._accept(sockets, self._session_factory(context), None)
        self.port = self._acceptors[0].port
        if tls is not None and tls.port is not None:
            tls_sockets = shared.tls_sockets if shared else bind(server.host, tls.port)
            self._accept(tls_sockets, self._session_factory(None), context)
            self.tls_port = self._acceptors[-1].port

    def _accept(
        self,
        sockets: list[socket.socket],
        session: Callable[[], SesSMTP],
        context: ssl.SSLContext | None,
    ) -> None:
        self._acceptors += [Acceptor(sock, session, context) for sock in sockets]

    async def _start_api(self, config: ApiConfig) -> None:
        from sesrx.api import Api

        self.api = Api(self)
        try:
            await self.api.start(config.host, config.port)
        except StartError:
            self._close_listeners()
            raise

    @property
    def listening(self) -> bool:
        """Say whether the SMTP port accepts connections."""
        return bool(self._acceptors)

    @property
    def api_port(self) -> int | None:
        """Return the port of the HTTP API, if it runs."""
        return self.api.port if self.api is not None else None

    def _processed(self, delivery: Delivery) -> None:
        message_id = delivery.message.message_id
        entry = Entry.from_message_trace(
            delivery.trace, self.lambdas.pending(message_id)
        )
        raw = delivery.message.raw
        if self.worker is None:
            self.mailbox.add(entry, raw)
        else:
            # The primary reads stored objects from the bucket, so only a
            # message no S3 action stored travels with its summary, and only
            # if the primary would keep it.
            kept = not _stored(delivery.trace) and keeps_raw(len(raw))
            self.worker.report(entry, raw if kept else None)

    async def message_trace(self, message_id: str) -> dict[str, Any] | None:
        """Return the trace file of ``message_id`` as it stands now."""
        path = self.data_dir.trace_path(message_id)
        return await asyncio.to_thread(load_trace, path)

    async def message_source(self, message_id: str) -> tuple[str, Path | bytes] | None:
        """Return where a message's bytes are, and the file or the bytes.

        The first object an S3 action stored (``s3://bucket/key``), what
        a consumer of the bucket reads; else the bytes received, while
        they are still in memory (``received``).
        """
        buckets = self.buckets
        for bucket, key in stored_objects(await self.message_trace(message_id)):
            if bucket_problem(bucket):
                # Trace files are read back: one naming a bucket "/etc" was
                # not written by sesrx, and the API must not read there.
                continue
            where = f"s3://{bucket}/{key}"
            if buckets.is_remote(bucket):
                with contextlib.suppress(SesrxError):  # gone, or store down
                    return where, await buckets.get_object(bucket, key)
                continue
            path = self._inside_buckets(self.data_dir.object_path(bucket, key))
            if path is not None:
                return where, path
        received = self.mailbox.raw(message_id)
        return None if received is None else ("received", received)

    def _inside_buckets(self, path: Path) -> Path | None:
        """Return the file ``path`` names if it is really in the bucket folders.

        A link planted in a bucket folder must not make the API serve files
        from elsewhere.
        """
        buckets = (self.data_dir.root / "s3").resolve()
        try:
            resolved = path.resolve(strict=True)
        except (OSError, RuntimeError):  # absent, a name too long, a loop
            return None
        if not resolved.is_relative_to(buckets) or not resolved.is_file():
            return None
        return resolved

    async def clear(self) -> int:
        """Forget every message and empty the data folder; return files removed.

        The setup notifications are written again, as they would stand in
        a bucket whose rules have just been saved.
        """
        # On its own task: if whoever asked goes away, the pause must still
        # last until the folder is empty, or messages answered meanwhile
        # would be deleted with it.
        clearing = asyncio.get_running_loop().create_task(self._clear())
        self._clearing.add(clearing)
        clearing.add_done_callback(self._clearing.discard)
        return await asyncio.shield(clearing)

    async def _clear(self) -> int:
        workers = self.primary.paused() if self.primary else contextlib.nullcontext()
        # One at a time: two would empty the folders under each other's writes.
        async with self._clear_lock, self.pipeline.paused(), workers:
            self.mailbox.clear()
            self.lambdas.invocations.clear()
            removed = await asyncio.to_thread(self.data_dir.empty)
            await write_setup_notifications(self.config, self.buckets)
        return removed

    async def apply(self, config: Config) -> None:
        """Use ``config`` from the next message and the next connection on."""
        self.config = config
        self.pipeline.config = config
        self.lambdas.timeout = config.server.lambda_timeout
        if self.worker is None:  # the primary writes them for all
            await write_setup_notifications(config, self.buckets)

    @property
    def buckets(self) -> BucketStore:
        """Return the store of the running configuration's buckets."""
        return self.pipeline.buckets(self.config)

    def _session_factory(self, context: ssl.SSLContext | None) -> Callable[[], SesSMTP]:
        """Return what makes a session; ``context`` is offered for STARTTLS."""
        server = self.config.server
        loop = asyncio.get_running_loop()

        def session() -> SesSMTP:
            return SesSMTP(
                self.handler,
                self._sessions,
                hostname=server.hostname,
                ident=IDENT,
                data_size_limit=server.max_message_size,
                timeout=server.limits.command_timeout,
                tls_context=context,
                # Seconds to wait for the PROXY header (aiosmtpd's own knob).
                proxy_protocol_timeout=PROXY_TIMEOUT if server.proxy_protocol else None,
                loop=loop,
            )

        return session

    def _close_listeners(self) -> None:
        for acceptor in self._acceptors:
            acceptor.close()
        self._acceptors = []

    async def stop(self) -> None:
        """Stop listening, finish the messages in flight, wait for handlers."""
        if not self._acceptors:
            return
        grace = self.config.server.grace_period
        if self._watcher is not None:
            self._watcher.cancel()
        self._close_listeners()
        if self.primary is not None:
            self.primary.ask_to_stop()

        deadline = asyncio.get_running_loop().time() + grace
        # Sessions between messages are closed at once; one sending a message
        # or waiting for its reply gets the reply, then is closed: no
        # session starts a message once the stop has begun.
        for session in list(self._sessions):
            session.close()
        # A message whose data ended just as its session closed is still
        # processed to its end, and its background handlers start: they
        # get their grace period with the others.
        if not (
            await self._sessions_closed(deadline)
            and await self._messages_done(deadline)
        ):
            log.warning("messages still in flight after %g s", grace)
            for session in list(self._sessions):
                session.close(now=True)

        if not await self.lambdas.drain(grace):
            log.warning(
                "%d Lambda handlers still running after %g s; abandoning them",
                self.lambdas.running,
                grace,
            )
            await self.lambdas.abandon()
        self.lambdas.close()
        if self.primary is not None:
            await self.primary.wait_stopped(grace)
        if self.worker is not None:
            self.worker.close()
        if self.api is not None:
            await self.api.stop()
        Capture.uninstall()

    async def _sessions_closed(self, deadline: float) -> bool:
        """Wait until every session has closed, or until ``deadline``."""
        loop = asyncio.get_running_loop()
        while self._sessions:
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(0.01)
        return True

    async def _messages_done(self, deadline: float) -> bool:
        """Wait until no message is being processed, or until ``deadline``."""
        timeout = max(0.0, deadline - asyncio.get_running_loop().time())
        try:
            await asyncio.wait_for(self.handler.idle.wait(), timeout)
        except TimeoutError:
            return False
        return True

    @property
    def address(self) -> str:
        """Return ``host:port`` of the listener (``[host]:port`` for IPv6)."""
        return host_port(self.config.server.host, self.port)

    async def __aenter__(self) -> Server:
        await self.start()
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


def _stored(trace: MessageTrace) -> bool:
    """Say whether an S3 action stored the message."""
    return any(
        action.type == "S3" and action.outcome == "ok"
        for rule in trace.rules
        for action in rule.actions
    )


def host_port(host: str, port: int | None) -> str:
    """Return ``host:port``, with an IPv6 address in brackets (RFC 3986)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
