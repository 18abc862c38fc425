"""Stop action: end the rule set."""

from __future__ import annotations

from sesrx.actions.base import ActionContext, ActionResult
from sesrx.actions.notify import notify, with_topic
from sesrx.config import StopAction
from sesrx.disposition import Disposition

__all__ = ["run_stop"]


async def run_stop(action: StopAction, context: ActionContext) -> ActionResult:
    """Stop processing: no later action or rule runs for this message."""
    published = notify(context, with_topic({"type": "Stop"}, action.topic_arn))
    return ActionResult(Disposition.STOP_RULE_SET, detail=published)
