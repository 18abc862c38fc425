"""The server: start listening, serve, and shut down cleanly."""

from __future__ import annotations

import asyncio
import logging
import ssl
from types import TracebackType

from sesrx.buckets import BucketStore
from sesrx.config import Config
from sesrx.errors import StartError
from sesrx.lambda_logs import Capture
from sesrx.lambdas import LambdaRuntime
from sesrx.pipeline import Pipeline
from sesrx.reload import watch
from sesrx.setup_notice import write_setup_notifications
from sesrx.smtp import IDENT, SesHandler, SesSMTP
from sesrx.storage import DataDir
from sesrx.tls import server_context

__all__ = ["Server"]

log = logging.getLogger("sesrx.server")

PROXY_TIMEOUT = 5.0


class Server:
    """One sesrx instance: an SMTP listener running a configuration."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.data_dir = DataDir(config.data_dir)
        self.lambdas = LambdaRuntime(self.data_dir, config.server.lambda_timeout)
        self.pipeline = Pipeline(config, self.data_dir, self.lambdas)
        self.handler = SesHandler(self.pipeline)
        self.port: int | None = None
        self.tls_port: int | None = None
        self._listener: asyncio.Server | None = None
        self._tls_listener: asyncio.Server | None = None
        self._sessions: set[SesSMTP] = set()
        self._watcher: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Prepare the data folder and start listening."""
        self.data_dir.prepare()
        await write_setup_notifications(self.config, self.buckets)
        server = self.config.server
        tls = server.tls
        context = server_context(tls, server.hostname) if tls else None

        self._listener = await self._listen(server.port, context, implicit=False)
        self.port = self._listener.sockets[0].getsockname()[1]
        if tls is not None and tls.port is not None:
            self._tls_listener = await self._listen(tls.port, context, implicit=True)
            self.tls_port = self._tls_listener.sockets[0].getsockname()[1]
        if self.config.source is not None:
            watcher = watch(self.config.source, lambda: self.config, self.apply)
            self._watcher = asyncio.get_running_loop().create_task(watcher)
        Capture.install()

    async def apply(self, config: Config) -> None:
        """Use ``config`` from the next message and the next connection on."""
        self.config = config
        self.pipeline.config = config
        self.lambdas.timeout = config.server.lambda_timeout
        await write_setup_notifications(config, self.buckets)

    @property
    def buckets(self) -> BucketStore:
        """Return the store of the running configuration's buckets."""
        return self.pipeline.buckets(self.config)

    async def _listen(
        self, port: int, context: ssl.SSLContext | None, implicit: bool
    ) -> asyncio.Server:
        """Listen on ``port``: STARTTLS offered, or TLS from the first byte."""
        server = self.config.server
        loop = asyncio.get_running_loop()

        def session() -> SesSMTP:
            return SesSMTP(
                self.handler,
                self._sessions,
                hostname=server.hostname,
                ident=IDENT,
                data_size_limit=server.max_message_size,
                tls_context=None if implicit else context,
                # Seconds to wait for the PROXY header (aiosmtpd's own knob).
                proxy_protocol_timeout=PROXY_TIMEOUT if server.proxy_protocol else None,
                loop=loop,
            )

        try:
            return await loop.create_server(
                session, server.host, port, ssl=context if implicit else None
            )
        except OSError as exc:
            where = f"{server.host}:{port}"
            raise StartError(
                f"cannot listen on {where}: {exc.strerror or exc}"
            ) from exc

    async def stop(self) -> None:
        """Stop listening, finish the messages in flight, wait for handlers."""
        if self._listener is None:
            return
        grace = self.config.server.grace_period
        if self._watcher is not None:
            self._watcher.cancel()
        self._listener.close()
        self._listener = None
        if self._tls_listener is not None:
            self._tls_listener.close()
            self._tls_listener = None

        try:
            await asyncio.wait_for(self.handler.idle.wait(), grace)
        except TimeoutError:
            log.warning("messages still in flight after %g s", grace)
        for session in list(self._sessions):
            session.close()

        if not await self.lambdas.drain(grace):
            log.warning(
                "%d Lambda handlers still running after %g s; abandoning them",
                self.lambdas.running,
                grace,
            )
            await self.lambdas.abandon()
        self.lambdas.close()
        Capture.uninstall()

    @property
    def address(self) -> str:
        """Return ``host:port`` of the listener."""
        return f"{self.config.server.host}:{self.port}"

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
