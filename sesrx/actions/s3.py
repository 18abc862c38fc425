"""S3 action: store the message, with SES's headers on top, in a bucket."""

from __future__ import annotations

from sesrx.actions.base import ActionContext, ActionResult
from sesrx.actions.notify import notify, with_topic
from sesrx.config import S3Action

__all__ = ["run_s3"]


async def run_s3(action: S3Action, context: ActionContext) -> ActionResult:
    """Write the object ``<prefix>/<messageId>`` to its bucket, local or remote."""
    delivery = context.delivery
    key = action.object_key(delivery.message.message_id)
    # Where it went: a local "path", or the "endpoint_url" of a remote bucket.
    where = await context.services.buckets.put_object(
        action.bucket_name, key, delivery.stored_parts(context.rule.scan_enabled)
    )
    # objectKeyPrefix is in every real capture, if not in the documentation
    # (reference section 3.1).
    action_object = {
        "type": "S3",
        "bucketName": action.bucket_name,
        "objectKeyPrefix": action.object_key_prefix,
        "objectKey": key,
    }
    published = notify(context, with_topic(action_object, action.topic_arn))
    detail = {"bucket_name": action.bucket_name, "object_key": key, **where}
    return ActionResult(detail={**detail, **published})
