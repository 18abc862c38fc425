"""S3 action: store the message, with SES's headers on top, in a bucket."""

from __future__ import annotations

from sesrx.actions.base import ActionContext, ActionResult
from sesrx.config import S3Action

__all__ = ["run_s3"]


async def run_s3(action: S3Action, context: ActionContext) -> ActionResult:
    """Write the object ``<prefix>/<messageId>`` to the local bucket folder."""
    delivery = context.delivery
    key = action.object_key(delivery.message.message_id)
    path = await context.services.data_dir.put_object(
        action.bucket_name, key, delivery.stored_parts(context.rule.scan_enabled)
    )
    # TODO(#3): publish the S3 notification when topic_arn is set.
    return ActionResult(
        detail={"bucket_name": action.bucket_name, "object_key": key, "path": str(path)}
    )
