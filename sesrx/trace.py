"""The JSON trace of what the rule set did to one message.

Written to ``<data_dir>/traces/<messageId>.json`` once the synchronous
actions are done, and again whenever a background Lambda call finishes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sesrx.storage import read_regular_file

__all__ = [
    "ActionTrace",
    "MessageTrace",
    "RuleTrace",
    "lambda_actions",
    "load_trace",
    "stored_objects",
]


# Outcomes of actions that did not run: after a stop in their own rule, or
# in a rule that did not run.
NOT_REACHED = "not reached"
NOT_RUN = (NOT_REACHED, "not run")


@dataclass(slots=True)
class ActionTrace:
    """One action: its outcome, the disposition it gave, how long it took."""

    type: str
    outcome: str = "ok"  # ok | error | timeout | started | rejected | dsn | ...
    disposition: str | None = "CONTINUE"
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
        # Built by hand: dataclasses.asdict deep-copies every value, and the
        # trace is written at least once per message.
        return {
            "message_id": self.message_id,
            "received_at": self.received_at,
            "envelope": self.envelope,
            "verdicts": self.verdicts,
            "dkim_signatures": self.dkim_signatures,
            "rules": [_rule_dict(rule) for rule in self.rules],
            "reply": self.reply,
            "error": self.error,
        }

    def summary(self) -> str:
        """Return the rules that ran with their actions: ``r1(S3:ok) r2(...)``."""
        return " ".join(
            f"{rule.name}({','.join(_ran(rule.actions))})"
            for rule in self.rules
            if rule.status == "matched"
        )


def _rule_dict(rule: RuleTrace) -> dict[str, Any]:
    return {
        "name": rule.name,
        "status": rule.status,
        "recipients": rule.recipients,
        "actions": [
            {
                "type": action.type,
                "outcome": action.outcome,
                "disposition": action.disposition,
                "duration_ms": action.duration_ms,
                "error": action.error,
                "detail": action.detail,
            }
            for action in rule.actions
        ],
    }


def _ran(actions: list[ActionTrace]) -> list[str]:
    return [
        f"{action.type}:{action.outcome}{_stopped(action)}"
        for action in actions
        if action.outcome not in NOT_RUN
    ]


def _stopped(action: ActionTrace) -> str:
    stops = action.disposition not in (None, "CONTINUE")
    return f"->{action.disposition}" if stops else ""


# Trace files larger than this are not read (sesrx writes a few kilobytes).
TRACE_READ_LIMIT = 4 * 1024 * 1024


def load_trace(path: Path) -> dict[str, Any] | None:
    """Read a trace file; None if it was never written or cannot be read.

    Only a regular file of a sensible size is read, not a link, a pipe or a
    device: anyone who can write the data folder can put one there.
    """
    try:
        text = read_regular_file(path, TRACE_READ_LIMIT)
        trace = json.loads(text)
    except (OSError, ValueError, RecursionError, MemoryError):
        return None
    return trace if isinstance(trace, dict) else None


def _actions(trace: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Return every action of a trace file that has a type and a detail."""
    if not isinstance(trace, dict) or not isinstance(trace.get("rules"), list):
        return []
    return [
        action
        for rule in trace["rules"]
        if isinstance(rule, dict) and isinstance(rule.get("actions"), list)
        for action in rule["actions"]
        if isinstance(action, dict) and isinstance(action.get("detail"), dict)
    ]


def stored_objects(trace: dict[str, Any] | None) -> list[tuple[str, str]]:
    """Return bucket and key of each object S3 actions stored, from a trace file."""
    return [
        (detail["bucket_name"], detail["object_key"])
        for action in _actions(trace)
        if action.get("type") == "S3"
        and isinstance((detail := action["detail"]).get("bucket_name"), str)
        and isinstance(detail.get("object_key"), str)
    ]


def lambda_actions(trace: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Return the Lambda actions of a trace file that recorded their event."""
    return [
        action
        for action in _actions(trace)
        if action.get("type") == "Lambda" and "event" in action["detail"]
    ]
