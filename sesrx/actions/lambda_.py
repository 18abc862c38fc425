"""Lambda action: call a handler with the SES event."""

from __future__ import annotations

import contextlib
import json
from typing import Any

from sesrx.actions.base import ActionContext, ActionResult
from sesrx.actions.notify import notify, with_topic
from sesrx.config import LambdaAction
from sesrx.errors import StorageError
from sesrx.events import lambda_event, mail_object, receipt_object
from sesrx.lambdas import Invocation

__all__ = ["run_lambda"]


async def run_lambda(action: LambdaAction, context: ActionContext) -> ActionResult:
    """Invoke the function; wait for it only for ``RequestResponse``."""
    delivery = context.delivery
    function = action.function
    action_json = with_topic(
        {
            "type": "Lambda",
            "functionArn": function.arn,
            "invocationType": action.invocation_type,
        },
        action.topic_arn,
    )
    published = notify(context, action_json)
    receipt = receipt_object(delivery, context.rule, context.recipients, action_json)
    event = lambda_event(mail_object(delivery, context.rule.scan_enabled), receipt)
    lambdas = context.services.lambdas
    message_id = delivery.message.message_id

    # What the handler was given, before it can change it.
    given = {"event": json.loads(json.dumps(event)), **published}
    if action.invocation_type == "RequestResponse":
        disposition, invocation = await lambdas.request_response(
            function, event, message_id
        )
        detail = {**_detail(invocation), **given}
        return ActionResult(disposition, invocation.status, invocation.error, detail)

    async def finished(invocation: Invocation) -> None:
        context.trace.outcome = invocation.status
        context.trace.error = invocation.error
        context.trace.detail.update(_detail(invocation))
        # A failed trace write has been logged by the writer; the message
        # itself was answered long ago.
        with contextlib.suppress(StorageError):
            await context.services.save_trace(delivery)

    invocation = lambdas.event(function, event, message_id, finished)
    return ActionResult(outcome="started", detail={**_detail(invocation), **given})


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
