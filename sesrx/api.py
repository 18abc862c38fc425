"""The HTTP API and the web page, served with aiohttp beside the SMTP port.

    GET    /                           the web page
    GET    /healthz                    alive
    GET    /readyz                     SMTP listening and a rule set loaded
    GET    /api/messages               newest first; recipient, sender, rule,
                                       since, limit, offset
    DELETE /api/messages               forget every message, empty the data folder
    GET    /api/messages/{id}          summary and trace
    GET    /api/messages/{id}/raw      the stored object (or the bytes received)
    GET    /api/messages/{id}/event    the event a Lambda handler was given
    GET    /api/wait                   until count messages are done, or 408
    GET    /api/invocations            Lambda calls, newest first
    GET    /api/outbox                 bounce messages (RFC 3464), newest first
    GET    /api/outbox/{name}          one bounce message
    GET    /api/stream                 server-sent events as messages arrive

Lists are bounded by ``limit`` (at most 1000) and read no message bodies.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import os
import re
import socket
from collections.abc import Awaitable, Callable
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from sesrx import __version__
from sesrx.errors import StartError
from sesrx.listen import bind, forget_at_fork, keep_from_forks
from sesrx.mailbox import MESSAGE_ID, Entry, Query
from sesrx.trace import lambda_actions

if TYPE_CHECKING:
    from sesrx.server import Server

__all__ = ["Api"]

log = logging.getLogger("sesrx.api")

MAX_LIMIT = 1000
DEFAULT_LIMIT = 50
MAX_WAIT = 600.0
DEFAULT_WAIT = 30.0
MAX_WAITS = 64  # waits open at once
MAX_CONNECTIONS = 256  # HTTP connections open at once; the oldest gives way
KEEPALIVE = 75.0  # seconds an idle connection is kept
# Seconds between keep-alive comments on the event stream.
STREAM_PING = 15.0
# ASCII digits only: int() and float() also take other scripts' digits,
# "nan" and "inf".
_WHOLE = re.compile(r"-?[0-9]{1,18}")
_NUMBER = re.compile(r"-?[0-9]{1,18}(\.[0-9]{1,9})?")
_OUTBOX_NAME = re.compile(MESSAGE_ID.pattern + r"-[0-9]+\.eml")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class BadQueryError(Exception):
    """A query parameter that cannot be used; the message names it."""


class Api:
    """The HTTP side of one :class:`Server`."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.port: int | None = None
        self._runner: web.AppRunner | None = None
        self._listeners: list[asyncio.Server] = []
        self._sockets: list[socket.socket] = []
        self._streams: set[web.StreamResponse] = set()
        self._waiting = 0

    async def start(self, host: str, port: int) -> None:
        """Listen on ``host:port`` (0 for a free port)."""
        _quiet_bad_requests()
        middlewares = [_errors_as_json]
        if _is_loopback(host):
            middlewares.insert(0, _local_names_only)
        app = web.Application(middlewares=middlewares)
        app.add_routes(
            [
                web.get("/", self.page),
                web.get("/healthz", self.healthz),
                web.get("/readyz", self.readyz),
                web.get("/api/messages", self.list_messages),
                web.delete("/api/messages", self.clear),
                web.get("/api/messages/{id}", self.message),
                web.get("/api/messages/{id}/raw", self.raw),
                web.get("/api/messages/{id}/event", self.event),
                web.get("/api/wait", self.wait),
                web.get("/api/invocations", self.invocations),
                web.get("/api/outbox", self.outbox),
                web.get("/api/outbox/{name}", self.outbox_message),
                web.get("/api/stream", self.stream),
            ]
        )
        # No access log: one line per request would drown the message lines.
        # A client that hangs up ends its request's handler: a wait it gave
        # up on must not run on until its timeout.
        runner = web.AppRunner(
            app,
            access_log=None,
            shutdown_timeout=1.0,
            handler_cancellation=True,
            keepalive_timeout=KEEPALIVE,
        )
        await runner.setup()
        handlers = runner.server
        assert handlers is not None

        def connection() -> asyncio.BaseProtocol:
            # Open connections are bounded, so that clients of the API that
            # never finish a request cannot use up the process's files and
            # take the SMTP port down with them. The oldest gives way, so
            # that a new client (a health check) is still answered.
            open_now = [c for c in handlers.connections if c.transport is not None]
            if len(open_now) >= MAX_CONNECTIONS:
                open_now[0].force_close()  # its transport goes at once
            return handlers()

        try:
            sockets = bind(host, port, " for the HTTP API")
        except StartError:
            await runner.cleanup()
            raise
        loop = asyncio.get_running_loop()
        for sock in sockets:
            # Closed in processes a handler forks, so the port is free once
            # sesrx stops.
            keep_from_forks(sock)
            self._listeners.append(await loop.create_server(connection, sock=sock))
        self._runner = runner
        self._sockets = sockets
        self.port = sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Close open event streams and stop listening."""
        if self._runner is None:
            return
        for listener in self._listeners:
            listener.close()  # and its socket
        for sock in self._sockets:
            forget_at_fork(sock)
        self._listeners = []
        self._sockets = []
        for response in list(self._streams):
            task = response.task
            if task is not None:
                task.cancel()
        await self._runner.cleanup()
        self._runner = None

    # -- health ---------------------------------------------------------

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "version": __version__})

    async def readyz(self, request: web.Request) -> web.Response:
        server = self.server
        config = server.config
        body = {
            "status": "ready" if server.listening else "not ready",
            "smtp": server.address if server.listening else None,
            "rule_set": config.rule_set.name,
            "rules": len(config.rule_set.rules),
        }
        return web.json_response(body, status=200 if server.listening else 503)

    # -- messages -------------------------------------------------------

    async def list_messages(self, request: web.Request) -> web.Response:
        query = _query(request)
        limit = _integer(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
        offset = _integer(request, "offset", 0, 0, 10**9)
        total, page = self.server.mailbox.select(query, limit, offset)
        return web.json_response(
            {
                "total": total,
                "offset": offset,
                "limit": limit,
                "messages": [entry.summary() for entry in page],
            }
        )

    async def clear(self, request: web.Request) -> web.Response:
        removed = await self.server.clear()
        return web.json_response({"deleted": removed})

    async def message(self, request: web.Request) -> web.Response:
        entry = self._entry(request)
        trace = await self.server.message_trace(entry.message_id)
        return web.json_response({**entry.summary(), "trace": trace})

    async def raw(self, request: web.Request) -> web.StreamResponse:
        entry = self._entry(request)
        found = await self.server.message_source(entry.message_id)
        if found is None:
            raise web.HTTPNotFound(
                text=_error(
                    "no S3 action stored this message and its bytes are no "
                    "longer in memory"
                ),
                content_type="application/json",
            )
        where, content = found
        headers = {"Content-Type": "message/rfc822", "X-Sesrx-Object": where}
        if isinstance(content, Path):
            return web.FileResponse(content, headers=headers)
        return web.Response(body=content, headers=headers)

    async def event(self, request: web.Request) -> web.Response:
        entry = self._entry(request)
        trace = await self.server.message_trace(entry.message_id)
        function = request.query.get("function")
        for action in lambda_actions(trace):
            detail = action["detail"]
            if function is None or detail.get("function_name") == function:
                try:  # as read back from the trace file: refuse NaN and such
                    text = json.dumps(detail["event"], allow_nan=False)
                except ValueError:
                    break
                return web.json_response(text=text)
        which = f"of function {function!r} " if function else ""
        raise web.HTTPNotFound(
            text=_error(f"no Lambda action {which}ran for this message"),
            content_type="application/json",
        )

    async def wait(self, request: web.Request) -> web.Response:
        query = _query(request)
        count = _integer(request, "count", 1, 1, MAX_LIMIT)
        timeout = _number(request, "timeout", DEFAULT_WAIT, MAX_WAIT)
        if self._waiting >= MAX_WAITS:
            # Each wait looks through the list at every change.
            return web.json_response(
                {"error": f"{MAX_WAITS} waits are open already; try again later"},
                status=503,
            )
        self._waiting += 1
        try:
            enough, done = await self.server.mailbox.wait(query, count, timeout)
        finally:
            self._waiting -= 1
        body = {
            "count": len(done),
            "wanted": count,
            "messages": [entry.summary() for entry in done[-MAX_LIMIT:]],
        }
        return web.json_response(body, status=200 if enough else 408)

    # -- Lambda calls and bounces ----------------------------------------

    async def invocations(self, request: web.Request) -> web.Response:
        limit = _integer(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
        offset = _integer(request, "offset", 0, 0, 10**9)
        function = request.query.get("function")
        message_id = request.query.get("message_id")
        found = [
            invocation.as_dict()
            for invocation in reversed(self.server.lambdas.invocations)
            if (function is None or invocation.function_name == function)
            and (message_id is None or invocation.message_id == message_id)
        ]
        page = found[offset : offset + limit]
        return web.json_response(
            {"total": len(found), "offset": offset, "limit": limit, "invocations": page}
        )

    async def outbox(self, request: web.Request) -> web.Response:
        limit = _integer(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
        folder = self.server.data_dir.root / "outbox"
        found = await asyncio.to_thread(_list_outbox, folder)
        return web.json_response({"total": len(found), "messages": found[:limit]})

    async def outbox_message(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        path = self.server.data_dir.root / "outbox" / name
        if not _OUTBOX_NAME.fullmatch(name) or not path.is_file():
            raise web.HTTPNotFound(
                text=_error(f"no bounce message {name!r}"),
                content_type="application/json",
            )
        return web.FileResponse(path, headers={"Content-Type": "message/rfc822"})

    # -- live updates and the page ----------------------------------------

    async def stream(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        queue = self.server.mailbox.listen()
        self._streams.add(response)
        try:
            await response.write(b": connected\n\n")
            while True:
                try:
                    change = await asyncio.wait_for(queue.get(), STREAM_PING)
                except TimeoutError:
                    await response.write(b": ping\n\n")
                    continue
                data = json.dumps(change["data"], ensure_ascii=False)
                await response.write(
                    f"event: {change['event']}\ndata: {data}\n\n".encode()
                )
        except (ConnectionError, asyncio.CancelledError):
            pass  # the page went away, or the server is stopping
        finally:
            self.server.mailbox.unlisten(queue)
            self._streams.discard(response)
        return response

    async def page(self, request: web.Request) -> web.Response:
        html = resources.files("sesrx").joinpath("web/index.html").read_bytes()
        return web.Response(body=html, content_type="text/html", charset="utf-8")

    # -- helpers ----------------------------------------------------------

    def _entry(self, request: web.Request) -> Entry:
        message_id = request.match_info["id"]
        entry = (
            self.server.mailbox.get(message_id)
            if MESSAGE_ID.fullmatch(message_id)
            else None
        )
        if entry is None:
            raise web.HTTPNotFound(
                text=_error(f"no message {message_id!r}"),
                content_type="application/json",
            )
        return entry


class _BadRequestFilter(logging.Filter):
    """Keep a malformed request from a client out of the log as a traceback.

    aiohttp answers it with 400 and logs an error with the traceback; any
    local client could fill the log that way.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, HttpProcessingError):
            log.debug("malformed HTTP request: %s", error)
            return False
        return True


def _quiet_bad_requests() -> None:
    server_log = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, _BadRequestFilter) for f in server_log.filters):
        server_log.addFilter(_BadRequestFilter())


@web.middleware
async def _local_names_only(
    request: web.Request, handler: Handler
) -> web.StreamResponse:
    """Refuse requests addressed to another name (DNS rebinding).

    A web page elsewhere can make a browser's name for it point to
    127.0.0.1, then read mail or empty the data folder from its own origin;
    such requests still carry that name in Host.
    """
    try:
        name = urlsplit(f"//{request.host}").hostname or ""
    except ValueError:  # such as an unclosed "[" in the Host header
        name = request.host
    if not (_is_loopback(name) or name.endswith(".localhost")):
        return web.json_response(
            {"error": f"this API answers to localhost only, not to {name!r}"},
            status=421,
        )
    return await handler(request)


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@web.middleware
async def _errors_as_json(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except BadQueryError as exc:
        return web.json_response({"error": str(exc)}, status=400)


def _error(text: str) -> str:
    return json.dumps({"error": text})


def _query(request: web.Request) -> Query:
    params = request.query
    since = params.get("since")
    return Query(
        recipient=params.get("recipient") or None,
        sender=params.get("sender") or None,
        rule=params.get("rule") or None,
        since=_since(since) if since else None,
    )


def _since(text: str) -> float:
    """Read ``since``: seconds since the epoch, or an ISO 8601 time."""
    if _NUMBER.fullmatch(text):
        return float(text)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise BadQueryError(
            f"since: expected seconds since the epoch or an ISO 8601 time, got {text!r}"
        ) from None
    if moment.tzinfo is None:
        raise BadQueryError(f"since: give a time zone (such as Z), got {text!r}")
    return moment.timestamp()


def _integer(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    text = request.query.get(name)
    if text is None:
        return default
    if not _WHOLE.fullmatch(text):
        raise BadQueryError(f"{name}: expected a whole number, got {text!r}")
    value = int(text)
    if not low <= value <= high:
        raise BadQueryError(f"{name}: expected {low} to {high}, got {value}")
    return value


def _number(request: web.Request, name: str, default: float, high: float) -> float:
    text = request.query.get(name)
    if text is None:
        return default
    if not _NUMBER.fullmatch(text):
        raise BadQueryError(f"{name}: expected a number of seconds, got {text!r}")
    value = float(text)
    if not 0 <= value <= high:
        raise BadQueryError(f"{name}: expected 0 to {high:g} seconds, got {text}")
    return value


def _list_outbox(folder: Path) -> list[dict[str, Any]]:
    """Return the bounce messages in ``folder``, newest first, without bodies."""
    try:
        with os.scandir(folder) as scan:
            found: list[dict[str, Any]] = []
            for item in scan:
                if not _OUTBOX_NAME.fullmatch(item.name):
                    continue
                stat = item.stat()
                found.append(
                    {
                        "name": item.name,
                        "message_id": item.name.partition("-")[0],
                        "size": stat.st_size,
                        "modified": stat.st_mtime,
                    }
                )
    except OSError:
        return []
    found.sort(key=lambda item: item["modified"], reverse=True)
    return found
