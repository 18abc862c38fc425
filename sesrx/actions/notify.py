"""The metadata notification an action publishes when it has a ``topic_arn``."""

from __future__ import annotations

from typing import Any

from sesrx.actions.base import ActionContext
from sesrx.events import mail_object, notification, receipt_object

__all__ = ["notify"]


def notify(context: ActionContext, action: dict[str, Any]) -> dict[str, Any]:
    """Publish ``Received`` without content to the action's topic, if it has one.

    Returns trace details: the topic and the SNS message id.
    """
    topic_arn = action.get("topicArn")
    if not topic_arn:
        return {}
    delivery, rule = context.delivery, context.rule
    receipt = receipt_object(delivery, rule, context.recipients, action)
    message = notification(mail_object(delivery, rule.scan_enabled), receipt)
    envelope = context.services.sns.publish(topic_arn, message)
    return {"topic_arn": topic_arn, "sns_message_id": envelope["MessageId"]}


def with_topic(action: dict[str, Any], topic_arn: str | None) -> dict[str, Any]:
    """Return SES's action object with ``topicArn`` after ``type``, when set."""
    if not topic_arn:
        return action
    kind = action.pop("type")
    return {"type": kind, "topicArn": topic_arn, **action}
