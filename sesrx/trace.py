"""The JSON trace of what the rule set did to one message.

Written to ``<data_dir>/traces/<messageId>.json`` once the synchronous
actions are done, and again whenever a background Lambda call finishes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["ActionTrace", "MessageTrace", "RuleTrace"]


@dataclass(slots=True)
class ActionTrace:
    """One action: its outcome, the disposition it gave, how long it took."""

    type: str
    outcome: str = "ok"  # ok | error | started | rejected | dsn | ...
    disposition: str = "CONTINUE"
    duration_ms: float = 0.0
    error: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class RuleTrace:
    """One rule: whether it matched, for whom, and its actions."""

    name: str
    status: str = "skipped"  # matched | skipped | disabled | not reached
    recipients: list[str] = field(default_factory=list)
    actions: list[ActionTrace] = field(default_factory=list)


@dataclass(slots=True)
class MessageTrace:
    """Everything that happened to one message."""

    message_id: str
    received_at: str
    envelope: dict[str, Any]
    verdicts: dict[str, Any] = field(default_factory=dict)
    dkim_signatures: list[dict[str, str]] = field(default_factory=list)
    rules: list[RuleTrace] = field(default_factory=list)
    reply: str = ""
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """Return the trace as JSON-ready data."""
        return asdict(self)

    def summary(self) -> tuple[list[str], list[str]]:
        """Return the names of matched rules and the actions that ran."""
        matched = [rule.name for rule in self.rules if rule.status == "matched"]
        actions = [
            f"{action.type}:{action.outcome}"
            for rule in self.rules
            for action in rule.actions
        ]
        return matched, actions
