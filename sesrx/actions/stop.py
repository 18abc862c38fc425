"""Stop action: end the rule set."""

from __future__ import annotations

from sesrx.actions.base import ActionContext, ActionResult
from sesrx.config import StopAction
from sesrx.disposition import Disposition

__all__ = ["run_stop"]


async def run_stop(action: StopAction, context: ActionContext) -> ActionResult:
    """Stop processing: no later action or rule runs for this message."""
    # TODO(#3): publish the Stop notification when topic_arn is set.
    return ActionResult(Disposition.STOP_RULE_SET)
