"""SNS action: publish the whole message to a topic."""

from __future__ import annotations

import base64
import logging

from sesrx.actions.base import ActionContext, ActionResult
from sesrx.config import SnsAction
from sesrx.events import mail_object, notification, receipt_object

__all__ = ["run_sns"]

log = logging.getLogger("sesrx.actions.sns")

# SES publishes nothing for mail over 150 KB, headers included; users see
# it silently dropped (reference sections 3.2 and 11).
MAX_CONTENT_BYTES = 150 * 1024


async def run_sns(action: SnsAction, context: ActionContext) -> ActionResult:
    """Publish ``Received`` with the message as ``content``."""
    delivery, rule = context.delivery, context.rule
    stored = b"".join(delivery.stored_parts(rule.scan_enabled))
    if len(stored) > MAX_CONTENT_BYTES:
        message_id = delivery.message.message_id
        log.info(
            "%s not published to %s: %d bytes is over 150 KB",
            message_id,
            action.topic_arn,
            len(stored),
        )
        return ActionResult(
            outcome="not-published",
            detail={"reason": f"{len(stored)} bytes is over SNS's 150 KB"},
        )

    # The API says UTF-8 and Base64; notifications say UTF8 and BASE64.
    base64_wanted = action.encoding == "Base64"
    content = (
        base64.b64encode(stored).decode("ascii")
        if base64_wanted
        else stored.decode("utf-8", errors="replace")
    )
    action_object = {
        "type": "SNS",
        "topicArn": action.topic_arn,
        "encoding": "BASE64" if base64_wanted else "UTF8",
    }
    receipt = receipt_object(delivery, rule, context.recipients, action_object)
    message = notification(mail_object(delivery, rule.scan_enabled), receipt, content)
    envelope = context.services.sns.publish(action.topic_arn, message)
    return ActionResult(
        detail={"topic_arn": action.topic_arn, "sns_message_id": envelope["MessageId"]}
    )
