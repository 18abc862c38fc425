"""WorkMail and Connect actions: accepted, traced, and otherwise left out.

They hand mail to other AWS services that have no local stand-in.
"""

from __future__ import annotations

from sesrx.actions.base import ActionContext, ActionResult
from sesrx.config import ConnectAction, WorkmailAction

__all__ = ["run_not_emulated"]


async def run_not_emulated(
    action: WorkmailAction | ConnectAction, context: ActionContext
) -> ActionResult:
    """Record that the action would have run; processing goes on."""
    return ActionResult(outcome="not emulated")
