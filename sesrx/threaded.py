"""Run a server on its own thread and event loop, for tests and scripts."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, TypeVar

from sesrx.config import Config
from sesrx.server import Server

__all__ = ["ServerThread"]

T = TypeVar("T")


class ServerThread:
    """A :class:`Server` on a background thread; blocking calls drive it."""

    def __init__(self, config: Config) -> None:
        self.server = Server(config)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="sesrx", daemon=True)
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def port(self) -> int:
        """Return the port the server listens on."""
        assert self.server.port is not None, "the server has not started"
        return self.server.port

    @property
    def host(self) -> str:
        """Return the address the server listens on."""
        return self.server.config.server.host

    def start(self, timeout: float = 10) -> None:
        """Start the server; raise what its start raised."""
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError("the server did not start in time")
        if self._error is not None:
            raise self._error

    def stop(self, timeout: float = 60) -> None:
        """Shut the server down as SIGTERM would, and end the thread."""
        if self._thread.is_alive():
            self.call(self.server.stop(), timeout)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout)

    def wait_idle(self, timeout: float = 10) -> bool:
        """Wait until no background Lambda call runs; say whether none does."""
        return self.call(self.server.lambdas.drain(timeout), timeout + 5)

    def call(self, coroutine: Coroutine[Any, Any, T], timeout: float) -> T:
        """Run a coroutine on the server's loop and return its result."""
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        return future.result(timeout)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self.server.start())
        except BaseException as exc:  # handed to start()
            self._error = exc
            self._ready.set()
            self._loop.close()
            return

        self._ready.set()
        self._loop.run_forever()
        self._loop.close()

    def __enter__(self) -> ServerThread:
        self.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
