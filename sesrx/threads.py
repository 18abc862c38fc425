"""Run blocking work on daemon threads and await it from the event loop.

Daemon threads with no upper bound, rather than a fixed pool: work that
never ends (a handler stuck in a loop) costs one idle thread, holds no pool
slot others wait for, and does not keep the process from exiting. A thread
whose work is done waits a while for more before it ends, since starting a
thread costs more than a handler that returns at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import os
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["idle_threads", "on_daemon_thread", "start_on_daemon_thread"]

T = TypeVar("T")

# Seconds a thread with nothing to do waits for more work before it ends.
IDLE_FOR = 30.0

# Work to run; what it returns is run once its thread counts as waiting
# (handing the result over), so the next job can take the same thread.
Work = Callable[[], Callable[[], None]]
Job = tuple[str, Work]


class _Spares:
    """Threads waiting for work, and the queue they take it from."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.jobs: queue.SimpleQueue[Job] = queue.SimpleQueue()
        self.waiting = 0  # threads waiting that no job has been promised to
        self.idle: set[threading.Thread] = set()

    def run(self, name: str, job: Work) -> None:
        """Hand ``job`` to a waiting thread, or start a thread for it."""
        with self.lock:
            if self.waiting:
                self.waiting -= 1
                self.jobs.put((name, job))
                return
        threading.Thread(
            target=self._serve, args=(job,), name=name, daemon=True
        ).start()

    def _serve(self, job: Work) -> None:
        me = threading.current_thread()
        while True:
            hand_over = job()
            with self.lock:
                self.waiting += 1
                self.idle.add(me)
            hand_over()
            try:
                name, job = self.jobs.get(timeout=IDLE_FOR)
            except queue.Empty:
                with self.lock:
                    # A job handed out just as the wait ended is this one's.
                    try:
                        name, job = self.jobs.get_nowait()
                    except queue.Empty:
                        self.waiting -= 1
                        self.idle.discard(me)
                        return
            with self.lock:
                self.idle.discard(me)
            me.name = name


_spares = _Spares()


def _forget_spares() -> None:
    # A forked process has none of its parent's threads.
    global _spares
    _spares = _Spares()


os.register_at_fork(after_in_child=_forget_spares)


def idle_threads() -> frozenset[threading.Thread]:
    """Return the threads waiting for work: nothing runs on them."""
    with _spares.lock:
        return frozenset(_spares.idle)


def start_on_daemon_thread(
    name: str,
    function: Callable[..., T],
    *args: Any,
    context: contextvars.Context | None = None,
) -> asyncio.Future[T]:
    """Start ``function(*args)`` on a daemon thread; return its future.

    Cancelling the future leaves the thread to finish; its result is dropped.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()
    run_in = context or contextvars.copy_context()

    def settle(outcome: Callable[[], None]) -> None:
        if not future.done():  # not cancelled by a time-out meanwhile
            outcome()

    def work() -> Callable[[], None]:
        try:
            result = run_in.run(function, *args)
        except Exception as exc:  # handed to the awaiting coroutine
            error = exc
            reply: Callable[[], None] = lambda: future.set_exception(error)  # noqa: E731
        else:
            reply = lambda: future.set_result(result)  # noqa: E731

        def hand_over() -> None:
            # A closed loop raises RuntimeError: nobody waits for this any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(settle, reply)

        return hand_over

    _spares.run(name, work)
    return future


async def on_daemon_thread(
    name: str,
    function: Callable[..., T],
    *args: Any,
    context: contextvars.Context | None = None,
) -> T:
    """Call ``function(*args)`` on a daemon thread; await its result."""
    return await start_on_daemon_thread(name, function, *args, context=context)
