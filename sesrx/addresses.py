"""Split address header values the way they were written.

``commonHeaders`` lists one string per address with display names and
quoting kept as sent (``"\\"Doe, John\\" <doe@example.com>"``), and
``destination`` lists the bare addresses; both come from these functions.
"""

from __future__ import annotations

__all__ = ["bare_address", "split_addresses"]


def split_addresses(value: str) -> list[str]:
    """Split a list of addresses at the commas between them.

    Commas inside quotes, comments and angle brackets do not split. A group
    (``team: a@x, b@x;``) contributes its members; its name is dropped.
    """
    items: list[str] = []
    start = 0
    seen_at = False
    state = _Scanner()
    for index, char in enumerate(value):
        seen_at = seen_at or char == "@"
        if not state.at_top_level(char) or char not in ",;:":
            continue
        if char != ":":
            items.append(value[start:index])
        elif seen_at:
            continue  # a colon after an address is not a group's name
        start, seen_at = index + 1, False

    items.append(value[start:])
    return [item.strip() for item in items if item.strip()]


def bare_address(item: str) -> str:
    """Return the address of one list member, without name or comments.

    The address is the first ``<...>`` outside quotes and comments; without
    one, the member itself less its comments.
    """
    state = _Scanner()
    start: int | None = None
    for index, char in enumerate(item):
        in_angle = state.angle
        state.at_top_level(char)
        if start is None and not in_angle and state.angle:
            start = index + 1
        elif start is not None and in_angle and not state.angle:
            return _without_comments(item[start:index])

    return _without_comments(item if start is None else item[start:])


def _without_comments(text: str) -> str:
    """Return ``text`` less its (possibly nested) comments."""
    kept: list[str] = []
    state = _Scanner()
    for char in text:
        in_comment = state.comment > 0
        state.at_top_level(char)
        if not in_comment and not state.comment:
            kept.append(char)
    return "".join(kept).strip()


class _Scanner:
    """Track quotes, comments and angle brackets one character at a time."""

    __slots__ = ("angle", "comment", "escaped", "quoted")

    def __init__(self) -> None:
        self.quoted = False
        self.escaped = False
        self.comment = 0
        self.angle = False

    def at_top_level(self, char: str) -> bool:
        """Consume ``char``; say whether it stands outside every construct."""
        if self.escaped:
            self.escaped = False
            return False
        if char == "\\" and (self.quoted or self.comment):
            self.escaped = True
            return False
        if self.quoted:
            self.quoted = char != '"'
            return False
        if self.comment:
            self.comment += {"(": 1, ")": -1}.get(char, 0)
            return False
        return self._opens_or_closes(char)

    def _opens_or_closes(self, char: str) -> bool:
        if char == '"':
            self.quoted = True
            return False
        if char == "(":
            self.comment = 1
            return False
        if char == "<":
            self.angle = True
        elif char == ">":
            self.angle = False
            return False
        return not self.angle
