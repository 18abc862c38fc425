"""Apply edits of the configuration file while the server runs.

The file is polled once a second. A good edit applies from the next message
(SES, too, uses the rule set as it was when a message arrived); a broken one
is reported and the running configuration stays. Where and how the server
listens, and its data folder, stay as they were started: those need a
restart, and so do edits of handler code already imported.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from sesrx.config import Config
from sesrx.errors import SesrxError, describe_error
from sesrx.loader import load_config
from sesrx.summary import warnings
from sesrx.threads import on_daemon_thread

__all__ = ["watch"]

log = logging.getLogger("sesrx.reload")

POLL_SECONDS = 1.0


async def watch(
    path: Path,
    current: Callable[[], Config],
    apply: Callable[[Config], Awaitable[None]],
) -> None:
    """Reload ``path`` whenever it changes, until cancelled."""
    seen = _stamp(path)
    while True:
        await asyncio.sleep(POLL_SECONDS)
        stamp = _stamp(path)
        if stamp == seen:
            continue
        seen = stamp
        try:
            # Loading imports handler modules: keep that off the event loop.
            fresh = await on_daemon_thread("sesrx-reload", load_config, path)
        except Exception as exc:  # a ConfigError, or any surprise: keep watching
            log.error("%s changed but cannot be used, keeping the running rules: %s",
                      path, describe_error(exc))  # fmt: skip
            continue
        try:
            await apply(_keep_listening(fresh, current()))
        except SesrxError as exc:
            log.error("%s reloaded, but: %s", path, exc)
            continue
        log.info("%s reloaded: rule set %s, %d rules", path, fresh.rule_set.name,
                 len(fresh.rule_set.rules))  # fmt: skip
        for warning in warnings(fresh):
            log.warning("%s", warning)


def _keep_listening(fresh: Config, running: Config) -> Config:
    server = dataclasses.replace(
        fresh.server,
        host=running.server.host,
        port=running.server.port,
        tls=running.server.tls,
        hostname=running.server.hostname,
        proxy_protocol=running.server.proxy_protocol,
        max_message_size=running.server.max_message_size,
    )
    return dataclasses.replace(fresh, server=server, data_dir=running.data_dir)


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size
