"""Print the subject of each message sesrx stores in an S3 bucket.

The example application of compose.yaml: it reads what SES's S3 action
writes, the way an application on AWS would, from an S3-compatible store.

    python app.py                  list the bucket every POLL_SECONDS, print
                                   "<key>: <subject>" for each new message
    python app.py --once           one pass, then exit
    python app.py --create-bucket  create the bucket if it is missing, exit

Environment: S3_ENDPOINT_URL (default http://s3:5000), S3_BUCKET (inbound),
AWS_REGION (us-east-1), AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (test),
POLL_SECONDS (1).
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Iterator
from email import policy
from email.parser import BytesHeaderParser
from typing import Any

import boto3
from botocore.exceptions import ClientError

# SES writes an object of this name under each S3 action's prefix when the
# rule is saved; it is not a message, and readers skip it.
SETUP_NOTICE = "AMAZON_SES_SETUP_NOTIFICATION"
# Enough bytes for the header block of any message sesrx stores.
HEADER_BYTES = 256 * 1024
EXISTS = {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}


def main(argv: list[str] | None = None) -> int:
    """Run the command line and return the exit code."""
    args = _parser().parse_args(argv)
    bucket = os.environ.get("S3_BUCKET", "inbound")
    s3 = _client()
    ensure_bucket(s3, bucket)
    if args.create_bucket:
        print(f"bucket {bucket} is ready", flush=True)
        return 0

    print(f"watching s3://{bucket}", flush=True)
    seen: set[str] = set()
    while True:
        for key in new_messages(s3, bucket, seen):
            print(f"{key}: {subject(s3, bucket, key)}", flush=True)
        if args.once:
            return 0
        time.sleep(float(os.environ.get("POLL_SECONDS", "1")))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--once", action="store_true", help="one pass, then exit")
    mode.add_argument(
        "--create-bucket",
        action="store_true",
        help="create the bucket if it is missing, then exit",
    )
    return parser


def _client() -> Any:
    return boto3.client(
        "s3",
        endpoint_url=os.environ.get("S3_ENDPOINT_URL", "http://s3:5000"),
        region_name=os.environ.get("AWS_REGION", "us-east-1"),
        aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID", "test"),
        aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY", "test"),
    )


def ensure_bucket(s3: Any, bucket: str) -> None:
    """Create ``bucket`` unless it exists."""
    request: dict[str, Any] = {"Bucket": bucket}
    region = s3.meta.region_name
    # us-east-1 is the one region that takes no location constraint.
    if region != "us-east-1":
        request["CreateBucketConfiguration"] = {"LocationConstraint": region}
    try:
        s3.create_bucket(**request)
    except ClientError as exc:
        if exc.response["Error"]["Code"] not in EXISTS:
            raise


def new_messages(s3: Any, bucket: str, seen: set[str]) -> Iterator[str]:
    """Yield the keys of messages not yet in ``seen``, and add them to it."""
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for item in page.get("Contents", []):
            key = item["Key"]
            if key in seen or key.rsplit("/", 1)[-1] == SETUP_NOTICE:
                continue
            seen.add(key)
            yield key


def subject(s3: Any, bucket: str, key: str) -> str:
    """Return the decoded Subject of the stored message ``key``."""
    head = s3.get_object(Bucket=bucket, Key=key, Range=f"bytes=0-{HEADER_BYTES - 1}")
    headers = BytesHeaderParser(policy=policy.default).parsebytes(head["Body"].read())
    return str(headers.get("Subject", "(no subject)"))


if __name__ == "__main__":
    raise SystemExit(main())
