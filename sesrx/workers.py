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
import ctypes
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
from sesrx.listen import forget_at_fork, keep_from_forks

if TYPE_CHECKING:
    from sesrx.mailbox import Entry
    from sesrx.server import Server

__all__ = ["Primary", "Shared", "Worker", "fork_workers"]

log = logging.getLogger("sesrx.workers")

# Seconds a worker may take to stop beyond the grace period before it is killed.
STOP_MARGIN = 5.0
# Seconds beyond the Lambda timeout a worker may take to pause for a clear.
PAUSE_MARGIN = 10.0
# Seconds to read what an ended worker wrote before closing its channel.
EXIT_DRAIN = 1.0
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
    parent = os.getpid()
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
            _end_with(parent)
            return Worker(number, theirs)
        theirs.close()
        children.append(Child(number, pid, ours))
    return Primary(children)


def _end_with(parent: int) -> None:
    """Have the kernel send SIGTERM when the primary ends (Linux).

    End of file on the channel says so too, but a process a handler forked
    in the primary holds a copy of its end and keeps the channel open.
    """
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # it ended before the call
        os.kill(os.getpid(), signal.SIGTERM)


_PR_SET_PDEATHSIG = 1


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
    leaving: bool = False  # it said it stops on a signal of its own


class Primary:
    """The primary's side: gather what workers report; pause and stop them."""

    def __init__(self, children: list[Child]) -> None:
        self.children = children
        self._followers: set[asyncio.Task[None]] = set()
        self._pauses = 0
        self._stopping = False
        # Longer than a worker's messages can take to finish (set at start).
        self.pause_timeout = 60.0

    async def start(self, server: Server) -> None:
        """Listen to every worker, feeding the server's list of messages."""
        self.pause_timeout = server.config.server.lambda_timeout + PAUSE_MARGIN
        loop = asyncio.get_running_loop()
        for child in self.children:
            child.channel = await Channel.open(child.sock)
            keep_from_forks(child.sock)
            task = loop.create_task(self._follow(child, server))
            self._followers.add(task)
            task.add_done_callback(self._followers.discard)
            _watch_exit(child)

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
            elif kind == "leaving":
                child.leaving = True

        child.channel.close()
        forget_at_fork(child.sock)
        if child.leaving:
            log.info("worker %d (pid %d) stopped", child.number, child.pid)
        elif not self._stopping:
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
            acks = {child.acks[number]: child for child in live}
            if acks:
                _, late = await asyncio.wait(acks, timeout=self.pause_timeout)
                for ack in late:  # stopped (SIGSTOP) or stuck: wait no longer
                    log.warning(
                        "worker %d (pid %d) did not pause within %g s; going on"
                        " without it",
                        acks[ack].number,
                        acks[ack].pid,
                        self.pause_timeout,
                    )
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
        """Wait for every worker to end, all at once; kill those that hang."""
        await asyncio.gather(*(_stopped(child, grace) for child in self.children))


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


async def _stopped(child: Child, grace: float) -> None:
    try:
        await asyncio.wait_for(child.ended.wait(), grace + STOP_MARGIN)
    except TimeoutError:
        log.warning(
            "worker %d (pid %d) did not stop; killing it", child.number, child.pid
        )
        with contextlib.suppress(ProcessLookupError):
            os.kill(child.pid, signal.SIGKILL)
        await child.ended.wait()


def _watch_exit(child: Child) -> None:
    """Close the channel shortly after the worker's process ends.

    End of file says so too, but not while a process a handler forked in the
    worker holds a copy of its end. Linux only (a pidfd); elsewhere end of
    file alone.
    """
    try:
        descriptor = os.pidfd_open(child.pid)
    except (OSError, AttributeError):
        return
    loop = asyncio.get_running_loop()

    def ended() -> None:
        loop.remove_reader(descriptor)
        os.close(descriptor)
        # What it wrote before it ended is still to be read.
        if child.channel is not None:
            loop.call_later(EXIT_DRAIN, child.channel.close)

    loop.add_reader(descriptor, ended)


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
        keep_from_forks(self._sock)
        server.lambdas.on_settled = lambda message_id: channel.send(
            "settled", message_id
        )
        server.lambdas.on_change = lambda invocation, first: channel.send(
            "invocation", invocation, first
        )
        self._spawn(self._follow(server))

    def leaving(self) -> None:
        """Tell the primary this worker stops on a signal of its own."""
        if self._channel is not None:
            self._channel.send("leaving")

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
