"""Import Lambda handlers named as ``module:attribute`` strings."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["HandlerImportError", "import_callable"]

Handler = Callable[[dict[str, Any], Any], Any]


class HandlerImportError(Exception):
    """The import string cannot be turned into a callable."""


def import_callable(spec: str, base_dir: Path) -> Handler:
    """Import ``module:attribute`` with ``base_dir`` first on the path."""
    module_name, sep, attr_path = spec.partition(":")
    if not sep or not module_name or not attr_path:
        raise HandlerImportError(f"expected 'module:attribute', got {spec!r}")

    _put_first_on_path(base_dir)
    _forget_if_shadowed(module_name.split(".")[0], base_dir)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        problem = f"cannot import module {module_name!r}: {exc}"
        raise HandlerImportError(problem) from exc
    except Exception as exc:
        problem = f"importing {module_name!r} raised {type(exc).__name__}: {exc}"
        raise HandlerImportError(problem) from exc

    target: Any = module
    for part in attr_path.split("."):
        try:
            target = getattr(target, part)
        except AttributeError as exc:
            problem = f"module {module_name!r} has no attribute {attr_path!r}"
            raise HandlerImportError(problem) from exc

    if not callable(target):
        raise HandlerImportError(f"{spec!r} is not callable")
    handler: Handler = target
    return handler


def _put_first_on_path(folder: Path) -> None:
    entry = str(folder)
    if sys.path[:1] != [entry]:
        if entry in sys.path:
            sys.path.remove(entry)
        sys.path.insert(0, entry)


def _forget_if_shadowed(top: str, base_dir: Path) -> None:
    """Drop a cached module of this name that came from another folder.

    Two configurations may each keep a ``lambdas`` package beside them; the
    one being loaded must get its own, not the first one imported.
    """
    cached = sys.modules.get(top)
    local = base_dir / top
    if cached is None or not (local.is_dir() or local.with_suffix(".py").is_file()):
        return
    origin = getattr(cached, "__file__", None)
    if origin:
        found = Path(origin).resolve()
        if (
            found.is_relative_to(local.resolve())
            or found == local.with_suffix(".py").resolve()
        ):
            return

    for name in [n for n in sys.modules if n == top or n.startswith(top + ".")]:
        del sys.modules[name]
    importlib.invalidate_caches()
