"""sesrx: a local SMTP server that runs Amazon SES receipt rule sets."""

from sesrx.config import Config
from sesrx.errors import ConfigError, SesrxError
from sesrx.loader import load_config, load_default_config
from sesrx.server import Server

__version__ = "0.1.0"

__all__ = [
    "Config",
    "ConfigError",
    "Server",
    "SesrxError",
    "__version__",
    "load_config",
    "load_default_config",
]
