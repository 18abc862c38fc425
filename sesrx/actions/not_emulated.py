"""WorkMail and Connect actions: accepted, traced, and otherwise left out.

They hand mail to other AWS services that have no local stand-in.
"""

from __future__ import annotations

from sesrx.actions.base import ActionContext, ActionResult
from sesrx.actions.notify import notify, with_topic
from sesrx.config import ConnectAction, WorkmailAction

__all__ = ["run_not_emulated"]


async def run_not_emulated(
    action: WorkmailAction | ConnectAction, context: ActionContext
) -> ActionResult:
    """Record that the action would have run; processing goes on."""
    published: dict[str, str] = {}
    if isinstance(action, WorkmailAction):
        action_object = {"type": "WorkMail", "organizationArn": action.organization_arn}
        published = notify(context, with_topic(action_object, action.topic_arn))
    return ActionResult(outcome="not emulated", detail=published)
