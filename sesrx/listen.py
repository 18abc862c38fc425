"""Listening sockets, and taking connections off them.

The sockets are bound before the event loop runs, so that ``sesrx serve``
with several workers can fork after binding and every process accepts from
the same sockets. Each process takes one connection per wake-up: a process
busy with a message comes back to the socket later than an idle one, so the
idle one gets the next connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
import ssl
import weakref
from collections.abc import Callable

from sesrx.errors import StartError

__all__ = ["Acceptor", "bind", "forget_at_fork", "keep_from_forks"]

log = logging.getLogger("sesrx.server")

BACKLOG = 128
# Seconds to wait before accepting again when out of file descriptors.
RETRY_AFTER_EXHAUSTION = 0.5
_EXHAUSTION = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


# Sockets a process forked by a handler must not keep open: the listening
# ones (or the port stays taken after sesrx stops), clients' connections (or
# a client waits on after sesrx hung up) and the channels between sesrx's
# processes (or their end goes unnoticed). Weak, so that a connection closed
# and dropped leaves no trace here.
_SERVING: weakref.WeakSet[socket.socket] = weakref.WeakSet()


def keep_from_forks(sock: socket.socket) -> None:
    """Close ``sock`` in any process forked from this one from now on."""
    _SERVING.add(sock)


def forget_at_fork(sock: socket.socket) -> None:
    """Stop closing ``sock`` at a fork (it is being closed here)."""
    _SERVING.discard(sock)


def _close_in_child() -> None:
    for sock in list(_SERVING):
        with contextlib.suppress(OSError):
            sock.close()
    _SERVING.clear()


os.register_at_fork(after_in_child=_close_in_child)


def bind(host: str, port: int, purpose: str = "") -> list[socket.socket]:
    """Bind and listen on every address ``host`` names; StartError if one fails.

    ``purpose`` ends the error's first words ("... for the HTTP API").
    """
    where = f"{host}:{port}{purpose}"
    try:
        infos = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except OSError as exc:
        raise StartError(f"cannot listen on {where}: {exc.strerror or exc}") from exc

    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                # Each family gets its own socket, as asyncio gives them.
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(BACKLOG)
            sock.setblocking(False)
    except OSError as exc:
        for sock in sockets:
            sock.close()
        raise StartError(f"cannot listen on {where}: {exc.strerror or exc}") from exc

    return sockets


class Acceptor:
    """Accept connections from one listening socket into SMTP sessions."""

    def __init__(
        self,
        sock: socket.socket,
        session: Callable[[], asyncio.Protocol],
        context: ssl.SSLContext | None = None,
    ) -> None:
        self.sock = sock
        self._session = session
        self._context = context  # TLS from the first byte
        self._loop = asyncio.get_running_loop()
        self._starting: set[asyncio.Task[None]] = set()
        self._loop.add_reader(sock.fileno(), self._accept)
        keep_from_forks(sock)

    def _accept(self) -> None:
        try:
            connection, _ = self.sock.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return  # another process took it, or the client gave up
        except OSError as exc:
            if exc.errno not in _EXHAUSTION:
                log.warning("cannot accept a connection: %s", exc)
                return
            # Readiness stays set, so stop watching for a while instead of
            # spinning (the same as asyncio's own servers).
            log.warning("cannot accept a connection: %s; retrying", exc.strerror)
            self._loop.remove_reader(self.sock.fileno())
            self._loop.call_later(RETRY_AFTER_EXHAUSTION, self._resume)
            return

        connection.setblocking(False)
        keep_from_forks(connection)
        task = self._loop.create_task(self._start(connection))
        self._starting.add(task)
        task.add_done_callback(self._starting.discard)

    def _resume(self) -> None:
        if self.sock.fileno() != -1:
            self._loop.add_reader(self.sock.fileno(), self._accept)

    async def _start(self, connection: socket.socket) -> None:
        try:
            await self._loop.connect_accepted_socket(
                self._session, connection, ssl=self._context
            )
        except (OSError, ssl.SSLError, TimeoutError) as exc:
            # A TLS handshake that failed or a client that left at once.
            log.debug("connection dropped before its session began: %s", exc)
            connection.close()

    @property
    def port(self) -> int:
        """Return the port the socket listens on."""
        port: int = self.sock.getsockname()[1]
        return port

    def close(self) -> None:
        """Stop accepting, and close this process's handle on the socket."""
        forget_at_fork(self.sock)
        if self.sock.fileno() != -1:
            self._loop.remove_reader(self.sock.fileno())
            self.sock.close()
        for task in self._starting:
            task.cancel()
