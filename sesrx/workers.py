"""Several processes serving one SMTP port.

With ``server.workers`` above 1, ``sesrx serve`` binds the listening
sockets, prepares the data folder, then forks. Every process accepts from
the same sockets and runs the whole pipeline on its own core. The first
process (the primary) also runs the HTTP API; each of the others (workers)
reports to it over a socket pair what the API lists: each message once
answered, the end of its background handlers, and each Lambda invocation.
To empty the data folder, the primary pauses every worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pickle
import signal
import socket
import ssl
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sesrx.errors import StartError
from sesrx.lambdas import Invocation

if TYPE_CHECKING:
    from sesrx.mailbox import Entry
    from sesrx.server import Server

__all__ = ["Primary", "Shared", "Worker", "fork_workers"]

log = logging.getLogger("sesrx.workers")

# Seconds a worker may take to stop beyond the grace period before it is killed.
STOP_MARGIN = 5.0
_LENGTH = 4


@dataclass
class Shared:
    """What a process of a multi-process server starts from."""

    sockets: list[socket.socket]
    tls_sockets: list[socket.socket]
    # Made before the fork: with tls: auto, every process shows one certificate.
    tls_context: ssl.SSLContext | None
    role: Primary | Worker


class Channel:
    """Frames of Python values between two sesrx processes of one server."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self._reader = reader
        self._writer = writer

    @classmethod
    async def open(cls, sock: socket.socket) -> Channel:
        """Use one end of a socket pair."""
        reader, writer = await asyncio.open_connection(sock=sock)
        return cls(reader, writer)

    def send(self, *frame: Any) -> None:
        """Queue one frame; dropped if the other process has gone."""
        if self._writer.is_closing():
            return
        # Only our own processes are at the other end: pickle is safe here.
        data = pickle.dumps(frame, protocol=pickle.HIGHEST_PROTOCOL)
        self._writer.write(len(data).to_bytes(_LENGTH, "big") + data)

    async def receive(self) -> tuple[Any, ...] | None:
        """Return the next frame, or None once the other process has gone."""
        try:
            size = int.from_bytes(await self._reader.readexactly(_LENGTH), "big")
            frame: tuple[Any, ...] = pickle.loads(await self._reader.readexactly(size))
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
        return frame

    def close(self) -> None:
        """Close this end."""
        self._writer.close()


def fork_workers(count: int) -> Primary | Worker:
    """Fork ``count - 1`` workers; return this process's side of the server.

    Called before any event loop or thread runs: a fork copies only the
    thread that calls it.
    """
    children: list[Child] = []
    for number in range(1, count):
        ours, theirs = socket.socketpair()
        try:
            pid = os.fork()
        except OSError as exc:
            raise StartError(f"cannot start worker {number}: {exc}") from exc
        if pid == 0:
            ours.close()
            for child in children:  # the primary's ends, copied by the fork
                child.sock.close()
            return Worker(number, theirs)
        theirs.close()
        children.append(Child(number, pid, ours))
    return Primary(children)


@dataclass
class Child:
    """A worker, as the primary sees it."""

    number: int
    pid: int
    sock: socket.socket
    channel: Channel | None = None
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    acks: dict[int, asyncio.Future[None]] = field(default_factory=dict)
    # Messages whose background handlers run in this worker.
    pending: set[str] = field(default_factory=set)


class Primary:
    """The primary's side: gather what workers report; pause and stop them."""

    def __init__(self, children: list[Child]) -> None:
        self.children = children
        self._followers: set[asyncio.Task[None]] = set()
        self._pauses = 0
        self._stopping = False

    async def start(self, server: Server) -> None:
        """Listen to every worker, feeding the server's list of messages."""
        loop = asyncio.get_running_loop()
        for child in self.children:
            child.channel = await Channel.open(child.sock)
            task = loop.create_task(self._follow(child, server))
            self._followers.add(task)
            task.add_done_callback(self._followers.discard)

    async def _follow(self, child: Child, server: Server) -> None:
        assert child.channel is not None
        while (frame := await child.channel.receive()) is not None:
            kind = frame[0]
            if kind == "processed":
                server.mailbox.add(frame[1], frame[2])
                if frame[1].pending:
                    child.pending.add(frame[1].message_id)
            elif kind == "settled":
                server.mailbox.settle(frame[1])
                child.pending.discard(frame[1])
            elif kind == "invocation":
                _record(server.lambdas.invocations, frame[1], first=frame[2])
            elif kind == "paused":
                _resolve(child.acks.pop(frame[1], None))

        child.channel.close()
        if not self._stopping:
            log.error(
                "worker %d (pid %d) ended unexpectedly; the others go on serving",
                child.number,
                child.pid,
            )
        _abandon(child, server)
        for ack in child.acks.values():
            _resolve(ack)
        child.acks.clear()
        await asyncio.to_thread(_reap, child.pid)
        child.ended.set()

    @contextlib.asynccontextmanager
    async def paused(self) -> AsyncIterator[None]:
        """Hold every worker's new messages back until those in flight end."""
        self._pauses += 1
        number = self._pauses
        loop = asyncio.get_running_loop()
        live = [c for c in self.children if not c.ended.is_set() and c.channel]
        for child in live:
            child.acks[number] = loop.create_future()
            assert child.channel is not None
            child.channel.send("pause", number)
        try:
            await asyncio.gather(*(child.acks[number] for child in live))
            yield
        finally:
            for child in live:
                child.acks.pop(number, None)
                if child.channel is not None:
                    child.channel.send("resume", number)

    def ask_to_stop(self) -> None:
        """Ask every worker to stop as this process does."""
        self._stopping = True
        for child in self.children:
            if child.channel is not None:
                child.channel.send("stop")

    async def wait_stopped(self, grace: float) -> None:
        """Wait for every worker to end; kill one that hangs."""
        for child in self.children:
            try:
                await asyncio.wait_for(child.ended.wait(), grace + STOP_MARGIN)
            except TimeoutError:
                log.warning(
                    "worker %d (pid %d) did not stop; killing it",
                    child.number,
                    child.pid,
                )
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.pid, signal.SIGKILL)
                await child.ended.wait()


def _abandon(child: Child, server: Server) -> None:
    """Settle what a worker that has ended left running: it never will.

    Waits for those messages would otherwise last until they time out.
    """
    for invocation in server.lambdas.invocations:
        if invocation.message_id in child.pending and invocation.status == "running":
            invocation.status = "error"
            invocation.error = f"worker {child.number} ended before the handler did"
    for message_id in child.pending:
        log.warning(
            "%s background handlers lost with worker %d", message_id, child.number
        )
        server.mailbox.settle(message_id)
    child.pending.clear()


def _resolve(future: asyncio.Future[None] | None) -> None:
    if future is not None and not future.done():
        future.set_result(None)


def _record(
    invocations: deque[Invocation], invocation: Invocation, first: bool
) -> None:
    """Add a worker's invocation, or bring the one listed up to date.

    An update of one no longer listed (the list was emptied since) is dropped.
    """
    if first:
        invocations.append(invocation)
        return
    for index in range(len(invocations) - 1, -1, -1):
        if invocations[index].request_id == invocation.request_id:
            invocations[index] = invocation
            return


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


class Worker:
    """A worker's side: report to the primary; pause and stop when asked."""

    def __init__(self, number: int, sock: socket.socket) -> None:
        self.number = number
        self._sock = sock
        self._channel: Channel | None = None
        self._resumes: dict[int, asyncio.Event] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        # Told when the primary asks this worker to stop, or has gone.
        self.on_stop: Callable[[], None] | None = None

    async def start(self, server: Server) -> None:
        """Report the server's messages and invocations to the primary."""
        channel = self._channel = await Channel.open(self._sock)
        server.lambdas.on_settled = lambda message_id: channel.send(
            "settled", message_id
        )
        server.lambdas.on_change = lambda invocation, first: channel.send(
            "invocation", invocation, first
        )
        self._spawn(self._follow(server))

    def report(self, entry: Entry, raw: bytes | None) -> None:
        """Tell the primary of a message just answered."""
        if self._channel is not None:
            self._channel.send("processed", entry, raw)

    def _spawn(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _follow(self, server: Server) -> None:
        assert self._channel is not None
        while (frame := await self._channel.receive()) is not None:
            kind = frame[0]
            if kind == "pause":
                self._spawn(self._pause(frame[1], server))
            elif kind == "resume":
                self._resumes.setdefault(frame[1], asyncio.Event()).set()
            elif kind == "stop":
                break

        # Asked to stop, or the primary has gone (killed, say): either way
        # this worker stops too, and holds nothing back while it does.
        for resume in self._resumes.values():
            resume.set()
        if self.on_stop is not None:
            self.on_stop()

    async def _pause(self, number: int, server: Server) -> None:
        assert self._channel is not None
        resume = self._resumes.setdefault(number, asyncio.Event())
        async with server.pipeline.paused():
            server.lambdas.invocations.clear()
            self._channel.send("paused", number)
            await resume.wait()
        del self._resumes[number]

    def close(self) -> None:
        """Close the channel to the primary."""
        if self._channel is not None:
            self._channel.close()
