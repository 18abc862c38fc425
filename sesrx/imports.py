"""Import Lambda handlers named as ``module:attribute`` strings.

A handler module is looked for in the configuration file's folder first,
and loaded from there explicitly; the folder is then added to the end of
``sys.path`` so that a handler's own ``import helpers`` of a sibling works.
Putting it at the front instead would let any ``json.py`` beside a config
shadow the standard library for the whole process.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sesrx.errors import describe_error

__all__ = ["Handler", "HandlerImportError", "import_callable"]

Handler = Callable[[dict[str, Any], Any], Any]


class HandlerImportError(Exception):
    """The import string cannot be turned into a callable."""


def import_callable(spec: str, base_dir: Path) -> Handler:
    """Import ``module:attribute``, preferring modules beside the config."""
    module_name, sep, attr_path = spec.partition(":")
    if not sep or not module_name or not attr_path:
        raise HandlerImportError(f"expected 'module:attribute', got {spec!r}")

    try:
        _load_local_top(module_name.split(".")[0], base_dir)
        module = importlib.import_module(module_name)
    except HandlerImportError:
        raise
    except ImportError as exc:
        problem = f"cannot import module {module_name!r}: {exc}"
        raise HandlerImportError(problem) from exc
    except BaseException as exc:  # sys.exit() or worse at import time
        problem = f"importing {module_name!r} raised {describe_error(exc)}"
        raise HandlerImportError(problem) from exc

    target = _attribute(module, module_name, attr_path)
    if not callable(target):
        raise HandlerImportError(f"{spec!r} is not callable")
    handler: Handler = target
    return handler


def _attribute(module: Any, module_name: str, attr_path: str) -> Any:
    target = module
    for part in attr_path.split("."):
        try:
            target = getattr(target, part)
        except AttributeError as exc:
            problem = f"module {module_name!r} has no attribute {attr_path!r}"
            raise HandlerImportError(problem) from exc
    return target


def _load_local_top(top: str, base_dir: Path) -> None:
    """Load the top-level module ``top`` from ``base_dir`` if it is there."""
    folder = str(base_dir)
    if folder not in sys.path:
        sys.path.append(folder)

    found = importlib.machinery.PathFinder.find_spec(top, [folder])
    if found is None or found.loader is None:
        return
    if top in sys.stdlib_module_names:
        raise HandlerImportError(
            f"{found.origin or top} has the name of Python's standard library "
            f"module {top!r}; rename it"
        )

    cached = sys.modules.get(top)
    if cached is not None and _same_origin(cached, found):
        return
    # Another configuration's module of the same name, or an installed one:
    # this configuration gets its own.
    for name in [n for n in sys.modules if n == top or n.startswith(top + ".")]:
        del sys.modules[name]

    module = importlib.util.module_from_spec(found)
    sys.modules[top] = module
    try:
        found.loader.exec_module(module)
    except BaseException:
        del sys.modules[top]
        raise


def _same_origin(module: Any, found: importlib.machinery.ModuleSpec) -> bool:
    spec = getattr(module, "__spec__", None)
    if spec is None:
        return False
    if found.submodule_search_locations is not None:
        return list(spec.submodule_search_locations or []) == list(
            found.submodule_search_locations
        )
    return bool(spec.origin == found.origin)
