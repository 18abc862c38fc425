"""Call Lambda handlers in-process, the way the Lambda service would.

Plain handlers run on a daemon thread each, so a blocking handler stalls
neither the event loop nor shutdown; ``async def`` handlers run on the loop.
Both see a context object like the Python runtime's and have their output
sent to their function's log.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import json
import logging
import time
import traceback
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sesrx.config import Function
from sesrx.disposition import Disposition, disposition_of, unknown_disposition
from sesrx.errors import describe_error
from sesrx.lambda_logs import Capture, FunctionLog, InvocationLog, capture
from sesrx.storage import DataDir
from sesrx.threads import start_on_daemon_thread

__all__ = ["Invocation", "LambdaContext", "LambdaRuntime"]

log = logging.getLogger("sesrx.lambda")

# Retries of a failed Event invocation, as Lambda makes them.
EVENT_RETRIES = 2
# Invocations kept in memory for inspection; older ones are dropped.
KEEP_INVOCATIONS = 1000


class LambdaContext:
    """The context object of the Python Lambda runtime."""

    def __init__(self, function: Function, request_id: str, timeout: float) -> None:
        self.function_name = function.name
        self.function_version = "$LATEST"
        self.invoked_function_arn = function.arn
        self.memory_limit_in_mb = "128"
        self.aws_request_id = request_id
        self.log_group_name = f"/aws/lambda/{function.name}"
        self.log_stream_name = (
            f"{datetime.now(UTC):%Y/%m/%d}/[$LATEST]{uuid.uuid4().hex}"
        )
        self.identity = None
        self.client_context = None
        self._deadline = time.monotonic() + timeout

    def get_remaining_time_in_millis(self) -> int:
        """Return the milliseconds left before the invocation times out."""
        return max(0, int((self._deadline - time.monotonic()) * 1000))


@dataclass(slots=True)
class Invocation:
    """One call of a handler, for traces and inspection."""

    function_name: str
    function_arn: str
    invocation_type: str
    request_id: str
    message_id: str
    started_at: str
    status: str = "running"  # running | ok | error | timeout
    duration_ms: float | None = None
    disposition: str | None = None
    error: str | None = None
    note: str | None = None
    attempts: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """Return the invocation as JSON-ready data."""
        return {name: getattr(self, name) for name in self.__slots__}


Done = Callable[[Invocation], Awaitable[None]]


class LambdaRuntime:
    """Invoke handlers, keep track of background ones, and keep their logs."""

    def __init__(self, data_dir: DataDir, timeout: float) -> None:
        self.timeout = timeout
        self.invocations: deque[Invocation] = deque(maxlen=KEEP_INVOCATIONS)
        self._data_dir = data_dir
        self._logs: dict[str, FunctionLog] = {}
        self._background: set[asyncio.Task[None]] = set()
        # Background calls still running, by message id; and who to tell
        # when a message has none left.
        self._pending: dict[str, int] = {}
        self.on_settled: Callable[[str], None] | None = None
        # Told of each invocation when it starts (True) and when it changes.
        self.on_change: Callable[[Invocation, bool], None] | None = None

    async def request_response(
        self, function: Function, event: dict[str, Any], message_id: str
    ) -> tuple[Disposition, Invocation]:
        """Call a handler and wait for its disposition (CONTINUE on failure)."""
        invocation = self._new(function, "RequestResponse", message_id)
        result = await self._call(function, event, invocation)
        disposition = disposition_of(result)
        if invocation.status == "ok":
            invocation.disposition = disposition.value
        unknown = unknown_disposition(result)
        if unknown:
            # SES reads any other value as CONTINUE; a typo deserves a word.
            invocation.note = f"unknown disposition {unknown} read as CONTINUE"
            log.warning(
                "%s handler %s returned %s", message_id, function.name, invocation.note
            )
        self._changed(invocation)
        return disposition, invocation

    def event(
        self, function: Function, event: dict[str, Any], message_id: str, done: Done
    ) -> Invocation:
        """Start a handler in the background; ``done`` runs when it ends."""
        invocation = self._new(function, "Event", message_id)

        async def run() -> None:
            try:
                await self._attempts(function, event, invocation)
                await done(invocation)
            except Exception:
                log.exception(
                    "%s background call of %s failed", message_id, function.name
                )

        task = asyncio.get_running_loop().create_task(run())
        self._background.add(task)
        self._pending[message_id] = self._pending.get(message_id, 0) + 1

        def ended(task: asyncio.Task[None]) -> None:
            self._background.discard(task)
            left = self._pending.pop(message_id) - 1
            if left:
                self._pending[message_id] = left
            elif self.on_settled is not None:
                self.on_settled(message_id)

        task.add_done_callback(ended)
        return invocation

    def pending(self, message_id: str) -> int:
        """Return how many background calls for ``message_id`` still run."""
        return self._pending.get(message_id, 0)

    async def _attempts(
        self, function: Function, event: dict[str, Any], invocation: Invocation
    ) -> None:
        """Call an Event handler until it succeeds, at most three times.

        Lambda retries a failed asynchronous invocation twice, with the same
        request id (Lambda Developer Guide, "Asynchronous invocation"); here
        the retries come at once rather than after one and two minutes.
        """
        original = json.dumps(event)
        for _ in range(1 + EVENT_RETRIES):
            await self._call(function, json.loads(original), invocation)
            invocation.attempts.append(
                {
                    "status": invocation.status,
                    "error": invocation.error,
                    "duration_ms": invocation.duration_ms,
                }
            )
            self._changed(invocation)
            if invocation.status == "ok":
                return

    @property
    def running(self) -> int:
        """Return how many background invocations have not finished."""
        return len(self._background)

    async def drain(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for background invocations."""
        if not self._background:
            return True
        _, pending = await asyncio.wait(set(self._background), timeout=timeout)
        return not pending

    async def abandon(self) -> None:
        """Cancel the background invocations still waiting on a handler.

        A plain handler's thread cannot be stopped; it is a daemon thread
        and its result is dropped.
        """
        pending = list(self._background)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    def close(self) -> None:
        """Close the function log files."""
        for sink in self._logs.values():
            sink.close()

    def _new(self, function: Function, kind: str, message_id: str) -> Invocation:
        invocation = Invocation(
            function_name=function.name,
            function_arn=function.arn,
            invocation_type=kind,
            request_id=str(uuid.uuid4()),
            message_id=message_id,
            started_at=datetime.now(UTC).isoformat(timespec="milliseconds"),
        )
        self.invocations.append(invocation)
        if self.on_change is not None:
            self.on_change(invocation, True)
        return invocation

    def _changed(self, invocation: Invocation) -> None:
        if self.on_change is not None:
            self.on_change(invocation, False)

    def _sink(self, function: Function) -> FunctionLog:
        sink = self._logs.get(function.name)
        if sink is None:
            sink = self._logs[function.name] = FunctionLog(
                self._data_dir.log_path(function.name)
            )
        return sink

    async def _call(
        self, function: Function, event: dict[str, Any], invocation: Invocation
    ) -> Any:
        """Run the handler under a timeout; record how it ended."""
        request_id = invocation.request_id
        output = InvocationLog(function.name, request_id, self._sink(function))
        context = LambdaContext(function, request_id, self.timeout)
        output.sink.write(request_id, f"START RequestId: {request_id} Version: $LATEST")
        Capture.ensure()
        started = time.perf_counter()
        try:
            result = await asyncio.wait_for(
                _start(function, event, context, capture(output)), self.timeout
            )
        except TimeoutError:
            invocation.status = "timeout"
            invocation.error = f"Task timed out after {self.timeout:.2f} seconds"
            result = None
        except Exception as exc:
            invocation.status = "error"
            invocation.error = describe_error(exc)
            # In the invocation's context, so that the line is tagged with
            # the function and request id like the handler's own.
            capture(output).run(_report, output, exc)
            result = None
        else:
            invocation.status = "ok"
            invocation.error = None  # a retry that succeeds clears the last error

        invocation.duration_ms = round((time.perf_counter() - started) * 1000, 3)
        output.flush()
        _finish(output, invocation)
        return result


class HandlerExitError(Exception):
    """A handler raised SystemExit or KeyboardInterrupt; the server goes on."""


class MarshalError(Exception):
    """A handler returned a value that is not JSON (Lambda's MarshalError)."""


def _start(
    function: Function,
    event: dict[str, Any],
    context: LambdaContext,
    run_in: contextvars.Context,
) -> asyncio.Future[Any]:
    """Start the handler on a daemon thread; return the future of its result.

    ``async def`` handlers get an event loop of their own on that thread, so
    a handler that blocks, or never ends, holds up nobody else.
    """
    return start_on_daemon_thread(
        f"lambda:{function.name}",
        _invoke,
        function.handler,
        event,
        context,
        context=run_in,
    )


def _invoke(handler: Callable[..., Any], event: dict[str, Any], context: Any) -> Any:
    """Call the handler as the Lambda runtime would; return its JSON result."""
    try:
        result = handler(event, context)
        if inspect.iscoroutine(result):
            result = asyncio.run(result)
    except Exception:
        raise
    except BaseException as exc:
        # sys.exit() in a handler ends the invocation, not the server.
        raise HandlerExitError(f"handler raised {type(exc).__name__}({exc})") from None

    # Lambda serialises what a handler returns; what it cannot serialise is
    # an error, and a dict subclass arrives as a plain dict.
    try:
        return json.loads(json.dumps(result))
    except (TypeError, ValueError, RecursionError) as exc:
        raise MarshalError(f"Unable to marshal response: {exc}") from None


# Frames of these folders are sesrx's and asyncio's, not the handler's.
_INTERNAL = (str(Path(__file__).parent), str(Path(asyncio.__file__).parent))


def _handler_traceback(exc: BaseException) -> list[str]:
    """Format the traceback from the handler's first frame, as Lambda shows it."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename.startswith(_INTERNAL):
        tb = tb.tb_next
    return traceback.format_exception(type(exc), exc, tb or exc.__traceback__)


def _report(output: InvocationLog, exc: BaseException) -> None:
    try:
        lines = "".join(_handler_traceback(exc)).rstrip()
    except Exception:
        lines = describe_error(exc)
    output.sink.write(output.request_id, lines)
    # The function's log has it all; sesrx's own log a bounded part.
    log.error(
        "handler %s (request %s) raised %s\n%s",
        output.function_name,
        output.request_id,
        _cut(describe_error(exc), 1000),
        _cut(lines, 16 * 1024),
        extra={"indented": True},
    )


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return (
        f"{text[:limit]}... ({len(text) - limit} more characters in the function's log)"
    )


def _finish(output: InvocationLog, invocation: Invocation) -> None:
    request_id = invocation.request_id
    if invocation.status == "timeout":
        output.sink.write(request_id, str(invocation.error))
        log.error(
            "handler %s (request %s) %s",
            invocation.function_name,
            request_id,
            invocation.error,
        )
    output.sink.write(
        request_id,
        f"END RequestId: {request_id}",
        f"REPORT RequestId: {request_id}\tDuration: {invocation.duration_ms} ms",
    )
