"""The object SES writes under an S3 action's prefix when the rule is saved.

Consumers of the bucket must skip ``<prefix>/AMAZON_SES_SETUP_NOTIFICATION``;
sesrx writes one per S3 action when it loads the rule set, so that they
meet it locally too. Its exact text is not published; this one says what it
is for.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from email.utils import format_datetime

from sesrx.buckets import BucketStore
from sesrx.config import Config, S3Action
from sesrx.errors import StorageError

__all__ = ["SETUP_KEY", "write_setup_notifications"]

log = logging.getLogger("sesrx.server")

SETUP_KEY = "AMAZON_SES_SETUP_NOTIFICATION"


async def write_setup_notifications(config: Config, buckets: BucketStore) -> int:
    """Write the setup object for every S3 action; return how many were written.

    A local write that fails raises :class:`StorageError`. A remote bucket
    that cannot be written (its store down, the bucket not made yet) is only
    warned about: the server runs, and messages for it get 451 until it works.
    """
    targets = _targets(config)
    # At once, so that remote buckets that time out cost one wait, not several.
    outcomes = await asyncio.gather(
        *(
            buckets.put_object(bucket, key, [_notice(bucket, config)])
            for bucket, key in targets
        ),
        return_exceptions=True,
    )
    for (bucket, _), outcome in zip(targets, outcomes, strict=True):
        if isinstance(outcome, StorageError) and buckets.is_remote(bucket):
            log.warning("setup notification not written: %s", outcome)
        elif isinstance(outcome, BaseException):
            raise outcome

    return sum(not isinstance(outcome, BaseException) for outcome in outcomes)


def _targets(config: Config) -> list[tuple[str, str]]:
    """Return bucket and setup key of every S3 action, each pair once."""
    return sorted(
        {
            (action.bucket_name, action.object_key(SETUP_KEY))
            for rule in config.rule_set.rules
            for action in rule.actions
            if isinstance(action, S3Action)
        }
    )


def _notice(bucket: str, config: Config) -> bytes:
    text = (
        f"From: sesrx <no-reply@{config.server.hostname}>\r\n"
        f"Subject: Amazon SES Setup Notification\r\n"
        f"Date: {format_datetime(datetime.now(UTC))}\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=us-ascii\r\n"
        "\r\n"
        f"This is a test message. Receipt rule set {config.rule_set.name} can\r\n"
        f"write email to the bucket {bucket}.\r\n"
    )
    return text.encode("ascii", errors="replace")
