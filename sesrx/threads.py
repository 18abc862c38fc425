"""Run blocking work on daemon threads and await it from the event loop.

A daemon thread per call, rather than a pool: work that never ends (a
handler stuck in a loop) costs one idle thread, holds no pool slot others
wait for, and does not keep the process from exiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import threading
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["on_daemon_thread"]

T = TypeVar("T")


async def on_daemon_thread(
    name: str,
    function: Callable[..., T],
    *args: Any,
    context: contextvars.Context | None = None,
) -> T:
    """Call ``function(*args)`` on a new daemon thread; await its result."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()
    run_in = context or contextvars.copy_context()

    def settle(outcome: Callable[[], None]) -> None:
        if not future.done():  # not cancelled by a time-out meanwhile
            outcome()

    def work() -> None:
        try:
            result = run_in.run(function, *args)
        except Exception as exc:  # handed to the awaiting coroutine
            error = exc
            reply: Callable[[], None] = lambda: future.set_exception(error)  # noqa: E731
        else:
            reply = lambda: future.set_result(result)  # noqa: E731
        # A closed loop raises RuntimeError: nobody waits for this any more.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(settle, reply)

    threading.Thread(target=work, name=name, daemon=True).start()
    return await future
