"""sesrx: a local SMTP server that runs Amazon SES receipt rule sets."""

__version__ = "0.1.0"

from sesrx.config import Config  # noqa: E402  (after __version__, which they read)
from sesrx.errors import ConfigError, SesrxError  # noqa: E402
from sesrx.loader import load_config, load_default_config  # noqa: E402
from sesrx.server import Server  # noqa: E402

__all__ = [
    "Config",
    "ConfigError",
    "Server",
    "SesrxError",
    "__version__",
    "load_config",
    "load_default_config",
]
