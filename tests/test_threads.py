"""Daemon threads for blocking work (sesrx.threads): reused, never a queue."""

from __future__ import annotations

import asyncio
import contextvars
import os
import threading
import time

import pytest

from sesrx import threads
from sesrx.threads import idle_threads, on_daemon_thread, start_on_daemon_thread


def test_results_errors_and_context_reach_the_caller():
    tag: contextvars.ContextVar[str] = contextvars.ContextVar("tag")

    def fail() -> None:
        raise ValueError("no")

    async def main() -> None:
        assert await on_daemon_thread("t", lambda a, b: a + b, 2, 3) == 5
        with pytest.raises(ValueError, match="no"):
            await on_daemon_thread("t", fail)
        context = contextvars.copy_context()
        context.run(tag.set, "given")
        assert await on_daemon_thread("t", tag.get, context=context) == "given"

    asyncio.run(main())


def test_a_thread_whose_work_ended_takes_the_next():
    async def main() -> None:
        await on_daemon_thread("t", time.sleep, 0)
        before = set(threading.enumerate())
        # The thread counts as waiting before its result is handed over, so
        # each call finds it free however the two threads are scheduled.
        for _ in range(500):
            assert await on_daemon_thread("t", threading.current_thread) in before

    asyncio.run(main())


def test_a_thread_waiting_for_work_is_told_apart():
    release = threading.Event()
    holder: list[threading.Thread] = []

    def hold() -> None:
        holder.append(threading.current_thread())
        release.wait()

    async def main() -> None:
        busy = start_on_daemon_thread("busy", hold)
        while not holder:
            await asyncio.sleep(0.01)
        try:
            assert holder[0] not in idle_threads()
        finally:
            release.set()
        await busy
        deadline = time.monotonic() + 5
        while holder[0] not in idle_threads():
            assert time.monotonic() < deadline, "the thread never waited for work"
            await asyncio.sleep(0.01)

    asyncio.run(main())


def test_work_that_never_ends_holds_up_nobody():
    release = threading.Event()

    async def main() -> None:
        stuck = [start_on_daemon_thread("stuck", release.wait) for _ in range(5)]
        try:
            # Every thread is busy: the next call gets a thread of its own.
            answer = await asyncio.wait_for(on_daemon_thread("t", lambda: 42), 5)
            assert answer == 42
        finally:
            release.set()
        assert await asyncio.gather(*stuck) == [True] * 5

    asyncio.run(main())


def test_an_idle_thread_ends_after_a_while(monkeypatch):
    monkeypatch.setattr(threads, "IDLE_FOR", 0.2)

    async def main() -> threading.Thread:
        return await on_daemon_thread("t", threading.current_thread)

    thread = asyncio.run(main())
    thread.join(5)
    assert not thread.is_alive()


def test_a_forked_process_starts_threads_of_its_own():
    async def main() -> int:
        return await asyncio.wait_for(on_daemon_thread("t", os.getpid), 5)

    asyncio.run(main())  # leaves a thread waiting in this process
    pid = os.fork()
    if pid == 0:
        try:
            code = 0 if asyncio.run(main()) == os.getpid() else 1
        except BaseException:
            code = 2
        os._exit(code)
    deadline = time.monotonic() + 10
    while (status := os.waitpid(pid, os.WNOHANG))[0] == 0:
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            pytest.fail("the forked process waited for a thread it does not have")
        time.sleep(0.02)
    assert os.waitstatus_to_exitcode(status[1]) == 0
