"""Ask a running server whether it is ready, for ``sesrx healthcheck``."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from sesrx.config import MAX_CONFIG_BYTES, ApiConfig
from sesrx.storage import read_regular_file

__all__ = ["api_address", "probe", "url_host"]

DEFAULT = (ApiConfig().host, ApiConfig().port)
MAX_ANSWER = 64 * 1024  # bytes of /readyz read, at most


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Treat a redirect as an answer: /readyz itself must say ready."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


def api_address(path: Path | None) -> tuple[str, int] | None:
    """Return the API's host and port as a configuration file gives them.

    Only ``server.api`` is read: a health check runs every few seconds and
    must neither import handlers nor fail on an edit the server refused.
    None means the configuration turns the API off.
    """
    if path is None:
        return DEFAULT
    try:
        raw = read_regular_file(path, MAX_CONFIG_BYTES, follow_links=True)
        document = yaml.safe_load(raw.decode("utf-8"))
    except (OSError, ValueError, yaml.YAMLError, RecursionError):
        return DEFAULT
    server = document.get("server") if isinstance(document, dict) else None
    api = server.get("api") if isinstance(server, dict) else None
    if api is False:
        return None
    if not isinstance(api, dict):
        return DEFAULT
    host, port = api.get("host", DEFAULT[0]), api.get("port", DEFAULT[1])
    if not isinstance(host, str) or not isinstance(port, int):
        return DEFAULT
    return host, port


def url_host(host: str) -> str:
    """Return the address to reach a server listening on ``host``."""
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def probe(host: str, port: int, timeout: float) -> tuple[bool, str]:
    """GET ``/readyz``; return whether the server said ready, and what it said.

    The whole exchange must end within ``timeout`` seconds, whatever the
    other end sends (or trickles).
    """
    url = f"http://{url_host(host)}:{port}/readyz"
    outcome: dict[str, Any] = {}

    def ask() -> None:
        try:
            with _OPENER.open(url, timeout=timeout) as response:
                outcome["body"] = json.loads(response.read(MAX_ANSWER))
        except urllib.error.HTTPError as exc:
            outcome["error"] = f"{exc.code} {exc.reason}"
        except Exception as exc:  # whatever a wrong server sends, say so
            outcome["error"] = (
                str(getattr(exc, "reason", None) or exc) or type(exc).__name__
            )

    asking = threading.Thread(target=ask, name="sesrx-healthcheck", daemon=True)
    asking.start()
    asking.join(timeout)
    if asking.is_alive():
        return False, f"{url}: no answer within {timeout:g} s"
    if "error" in outcome:
        return False, f"{url}: {outcome['error']}"
    body = outcome["body"]
    if not isinstance(body, dict) or body.get("status") != "ready":
        return False, f"{url}: not ready: {json.dumps(body)[:200]}"
    return True, f"{url}: ready ({body.get('smtp')})"
