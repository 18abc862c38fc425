"""Read a YAML tree with the key path of every value at hand.

The loader in :mod:`sesrx.config` walks the document through :class:`Node`,
so every complaint names the file and the exact key path, for example
``rule_set.rules[2].actions[0].s3.bucket_name``.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from sesrx.errors import ConfigError

_TYPE_NAMES = {
    bool: "true or false",
    int: "an integer",
    float: "a number",
    str: "a string",
    list: "a list",
    dict: "a mapping",
}


@dataclass(frozen=True, slots=True)
class Node:
    """One value of the document and the path that leads to it."""

    value: Any
    path: str
    source: Path | str

    def fail(self, problem: str) -> NoReturn:
        """Raise a :class:`ConfigError` about this value."""
        raise ConfigError(self.source, self.path, problem)

    def child(self, key: str | int, value: Any) -> Node:
        """Return the node of one member of this mapping or list."""
        if isinstance(key, int):
            path = f"{self.path}[{key}]"
        else:
            path = f"{self.path}.{key}" if self.path else key
        return Node(value, path, self.source)

    def expect(self, *types: type) -> Any:
        """Return the value if it has one of ``types``, else fail."""
        # bool is an int to Python, never to a config reader.
        if isinstance(self.value, bool) and bool not in types:
            self._wrong_type(types)
        if not isinstance(self.value, types):
            self._wrong_type(types)
        if isinstance(self.value, str):
            _check_text(self)
        return self.value

    def _wrong_type(self, types: tuple[type, ...]) -> NoReturn:
        wanted = " or ".join(_TYPE_NAMES.get(t, t.__name__) for t in types)
        self.fail(f"expected {wanted}, got {_describe(self.value)}")

    def mapping(
        self, allowed: Collection[str], required: Collection[str] = ()
    ) -> Mapping:
        """Read this node as a mapping with exactly the given keys."""
        raw = {} if self.value is None else self.expect(dict)
        for key in raw:
            if not isinstance(key, str):
                self.fail(f"keys must be strings, got {_describe(key)}")
            if key not in allowed:
                known = ", ".join(sorted(allowed))
                self.child(key, raw[key]).fail(f"unknown key (known keys: {known})")

        for key in sorted(set(required) - raw.keys()):
            self.child(key, None).fail("required key is missing")

        return Mapping(self, raw)

    def members(self) -> Iterator[tuple[str, Node]]:
        """Yield key and node of each member of a mapping with free keys."""
        raw = {} if self.value is None else self.expect(dict)
        for key, value in raw.items():
            if not isinstance(key, str):
                self.fail(f"keys must be strings, got {_describe(key)}")
            yield key, self.child(key, value)

    def items(self) -> Iterator[Node]:
        """Yield the members of this list (an absent list is empty)."""
        raw = [] if self.value is None else self.expect(list)
        for index, value in enumerate(raw):
            yield self.child(index, value)


@dataclass(frozen=True, slots=True)
class Mapping:
    """A mapping node whose keys have been checked."""

    node: Node
    raw: dict[str, Any]

    def __contains__(self, key: str) -> bool:
        return key in self.raw

    def get(self, key: str) -> Node:
        """Return the node of ``key``; its value is None when absent."""
        return self.node.child(key, self.raw.get(key))

    def text(self, key: str, default: str | None = None) -> str:
        """Return a string member, or ``default`` when it is absent."""
        node = self.get(key)
        if node.value is None and default is not None:
            return default
        return str(node.expect(str))

    def integer(self, key: str, default: int, minimum: int = 0) -> int:
        """Return an integer member of at least ``minimum``."""
        node = self.get(key)
        if node.value is None:
            return default
        value = int(node.expect(int))
        if value < minimum:
            node.fail(f"expected an integer of at least {minimum}, got {value}")
        return value

    def number(self, key: str, default: float, maximum: float) -> float:
        """Return a positive number member of at most ``maximum``."""
        node = self.get(key)
        if node.value is None:
            return default
        value = float(node.expect(int, float))
        if not 0 < value <= maximum:  # also false for NaN
            node.fail(
                f"expected a number above 0 and at most {maximum:g}, got {value:g}"
            )
        return value

    def flag(self, key: str, default: bool) -> bool:
        """Return a boolean member."""
        node = self.get(key)
        if node.value is None:
            return default
        return bool(node.expect(bool))

    def choice(self, key: str, choices: tuple[str, ...], default: str) -> str:
        """Return a member that must be one of ``choices`` (exact spelling)."""
        node = self.get(key)
        if node.value is None:
            return default
        value = node.expect(str)
        if value not in choices:
            node.fail(f"expected one of {', '.join(choices)}, got {value!r}")
        return str(value)


def _check_text(node: Node) -> None:
    """Refuse text that no file name, header or log line can hold."""
    if "\x00" in node.value:
        node.fail("cannot contain a NUL character")
    try:
        node.value.encode("utf-8")
    except UnicodeEncodeError:
        node.fail("is not valid Unicode text (a lone surrogate escape?)")


def _describe(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return "true" if value else "false"
    name = _TYPE_NAMES.get(type(value), type(value).__name__)
    if isinstance(value, dict | list):
        return name
    return f"{name} {value!r}"
