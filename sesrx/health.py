"""Ask a running server whether it is ready, for ``sesrx healthcheck``."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

__all__ = ["probe", "url_host"]


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
