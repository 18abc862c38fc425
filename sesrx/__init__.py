"""sesrx: a local SMTP server that runs Amazon SES receipt rule sets."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from sesrx.config import Config
    from sesrx.errors import ConfigError, SesrxError
    from sesrx.loader import load_config, load_default_config
    from sesrx.server import Server

__all__ = [
    "Config",
    "ConfigError",
    "Server",
    "SesrxError",
    "__version__",
    "load_config",
    "load_default_config",
]

# Imported when first asked for: ``sesrx --version``, the pytest plugin and
# a Ctrl+C in the first moments of ``sesrx serve`` need none of the server.
_HOMES = {
    "Config": "sesrx.config",
    "ConfigError": "sesrx.errors",
    "SesrxError": "sesrx.errors",
    "load_config": "sesrx.loader",
    "load_default_config": "sesrx.loader",
    "Server": "sesrx.server",
}


def __getattr__(name: str) -> Any:
    try:
        home = _HOMES[name]
    except KeyError:
        raise AttributeError(f"module 'sesrx' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value
