"""Bounce action: record the bounce; the reply or the DSN comes at the end.

Whether the sender hears of it in the SMTP reply or by a delivery status
notification depends on every bounce of the message, so the decision is
made once the rule set has run (see :mod:`sesrx.bounces`).
"""

from __future__ import annotations

from sesrx.actions.base import ActionContext, ActionResult
from sesrx.actions.notify import notify, with_topic
from sesrx.config import BounceAction
from sesrx.inbound import Bounce

__all__ = ["run_bounce"]


async def run_bounce(action: BounceAction, context: ActionContext) -> ActionResult:
    """Record a bounce of this rule's recipients; processing goes on."""
    # A bounce does not stop the rule set: SES's own use case puts a Stop
    # action after it (SES Developer Guide, Lambda use case 2).
    bounce = Bounce(action, context.recipients, context.trace)
    context.delivery.bounces.append(bounce)
    action_object = {
        "type": "Bounce",
        "smtpReplyCode": action.smtp_reply_code,
        "statusCode": action.status_code,
        "message": action.message,
        "sender": action.sender,
    }
    published = notify(context, with_topic(action_object, action.topic_arn))
    return ActionResult(
        outcome="recorded",
        detail={
            "reply": action.reply,
            "recipients": list(context.recipients),
            **published,
        },
    )
