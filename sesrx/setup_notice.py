"""The object SES writes under an S3 action's prefix when the rule is saved.

Consumers of the bucket must skip ``<prefix>/AMAZON_SES_SETUP_NOTIFICATION``;
sesrx writes one per S3 action when it loads the rule set, so that they
meet it locally too. Its exact text is not published; this one says what it
is for.
"""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import format_datetime

from sesrx.config import Config, S3Action
from sesrx.storage import DataDir

__all__ = ["SETUP_KEY", "write_setup_notifications"]

SETUP_KEY = "AMAZON_SES_SETUP_NOTIFICATION"


async def write_setup_notifications(config: Config, data_dir: DataDir) -> int:
    """Write the setup object for every S3 action; return how many."""
    actions = {
        (action.bucket_name, action.object_key(SETUP_KEY))
        for rule in config.rule_set.rules
        for action in rule.actions
        if isinstance(action, S3Action)
    }
    for bucket, key in sorted(actions):
        await data_dir.put_object(bucket, key, [_notice(bucket, config)])
    return len(actions)


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
