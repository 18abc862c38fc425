"""Ask a running server whether it is ready, for ``sesrx healthcheck``."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import yaml

__all__ = ["api_address", "probe", "url_host"]

DEFAULT = ("127.0.0.1", 8025)


def api_address(path: Path | None) -> tuple[str, int] | None:
    """Return the API's host and port as a configuration file gives them.

    Only ``server.api`` is read: a health check runs every few seconds and
    must neither import handlers nor fail on an edit the server refused.
    None means the configuration turns the API off.
    """
    if path is None:
        return DEFAULT
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError):
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
    """GET ``/readyz``; return whether the server is ready and what it said."""
    url = f"http://{url_host(host)}:{port}/readyz"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            body = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return False, f"{url}: {exc.code} {exc.reason}"
    except (OSError, ValueError) as exc:
        return False, f"{url}: {getattr(exc, 'reason', None) or exc}"
    return True, f"{url}: {body.get('status')} ({body.get('smtp')})"
