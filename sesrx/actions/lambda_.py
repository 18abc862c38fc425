"""Lambda action: call a handler with the SES event."""

from __future__ import annotations

import contextlib
from typing import Any

from sesrx.actions.base import ActionContext, ActionResult
from sesrx.config import LambdaAction
from sesrx.errors import StorageError
from sesrx.events import lambda_event, mail_object, receipt_object
from sesrx.lambdas import Invocation

__all__ = ["run_lambda"]


async def run_lambda(action: LambdaAction, context: ActionContext) -> ActionResult:
    """Invoke the function; wait for it only for ``RequestResponse``."""
    delivery = context.delivery
    function = action.function
    action_json: dict[str, Any] = {
        "type": "Lambda",
        "functionArn": function.arn,
        "invocationType": action.invocation_type,
    }
    if action.topic_arn:
        action_json["topicArn"] = action.topic_arn
    receipt = receipt_object(delivery, context.rule, context.recipients, action_json)
    event = lambda_event(mail_object(delivery, context.rule.scan_enabled), receipt)
    lambdas = context.services.lambdas
    message_id = delivery.message.message_id

    if action.invocation_type == "RequestResponse":
        disposition, invocation = await lambdas.request_response(
            function, event, message_id
        )
        return ActionResult(
            disposition, invocation.status, invocation.error, _detail(invocation)
        )

    async def finished(invocation: Invocation) -> None:
        context.trace.outcome = invocation.status
        context.trace.error = invocation.error
        context.trace.detail.update(_detail(invocation))
        # A failed trace write has been logged by the writer; the message
        # itself was answered long ago.
        with contextlib.suppress(StorageError):
            await context.services.save_trace(delivery)

    invocation = lambdas.event(function, event, message_id, finished)
    return ActionResult(outcome="started", detail=_detail(invocation))


def _detail(invocation: Invocation) -> dict[str, Any]:
    detail: dict[str, Any] = {
        "function_name": invocation.function_name,
        "request_id": invocation.request_id,
        "invocation_type": invocation.invocation_type,
        "handler_duration_ms": invocation.duration_ms,
    }
    if invocation.note:
        detail["note"] = invocation.note
    if len(invocation.attempts) > 1:
        detail["attempts"] = invocation.attempts
    return detail
