"""Read rule sets and IP filters as the AWS CLI prints them.

``aws ses describe-active-receipt-rule-set`` (or ``describe-receipt-rule-set``)
and ``aws ses list-receipt-filters`` print the API's shapes in PascalCase;
these functions turn them into sesrx's snake_case configuration, keeping
the API's defaults: an absent ``Enabled`` or ``ScanEnabled`` is false.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sesrx._reader import Node
from sesrx.config import MAX_CONFIG_BYTES
from sesrx.errors import ConfigError
from sesrx.storage import read_regular_file

__all__ = ["ip_filters_from_aws", "read_json", "rule_set_from_aws"]

# API action member -> (sesrx key, API field -> sesrx field).
_ACTIONS: dict[str, tuple[str, dict[str, str]]] = {
    "S3Action": ("s3", {
        "BucketName": "bucket_name", "ObjectKeyPrefix": "object_key_prefix",
        "KmsKeyArn": "kms_key_arn", "TopicArn": "topic_arn",
        "IamRoleArn": "iam_role_arn",
    }),
    "LambdaAction": ("lambda", {
        "FunctionArn": "function_arn", "InvocationType": "invocation_type",
        "TopicArn": "topic_arn",
    }),
    "BounceAction": ("bounce", {
        "SmtpReplyCode": "smtp_reply_code", "StatusCode": "status_code",
        "Message": "message", "Sender": "sender", "TopicArn": "topic_arn",
    }),
    "AddHeaderAction": ("add_header", {
        "HeaderName": "header_name", "HeaderValue": "header_value",
    }),
    "StopAction": ("stop", {"Scope": "scope", "TopicArn": "topic_arn"}),
    "SNSAction": ("sns", {"TopicArn": "topic_arn", "Encoding": "encoding"}),
    "WorkmailAction": ("workmail", {
        "OrganizationArn": "organization_arn", "TopicArn": "topic_arn",
    }),
    "ConnectAction": ("connect", {
        "InstanceARN": "instance_arn", "IAMRoleARN": "iam_role_arn",
    }),
}  # fmt: skip
_RULE_KEYS = {"Name", "Enabled", "TlsPolicy", "Recipients", "Actions", "ScanEnabled"}


def read_json(path: Path) -> Any:
    """Read a JSON file; a problem is a ConfigError naming the file."""
    try:
        raw = read_regular_file(path, MAX_CONFIG_BYTES, follow_links=True)
        return json.loads(raw.decode("utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(path, "", f"cannot read the file: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(path, "", f"not valid JSON: {exc}") from exc
    except RecursionError as exc:
        raise ConfigError(path, "", "not valid JSON: nested too deeply") from exc


def rule_set_from_aws(document: Any, source: Path | str) -> dict[str, Any]:
    """Return a ``rule_set`` mapping from describe-receipt-rule-set output."""
    root = Node(document, "", source).mapping({"Metadata", "Rules"})
    if "Metadata" not in root:
        root.node.fail("no Metadata: the AWS CLI prints nothing when no set is active")
    metadata = root.get("Metadata").mapping({"Name", "CreatedTimestamp"}, {"Name"})
    return {
        "name": metadata.get("Name").expect(str),
        "rules": [_rule(item) for item in root.get("Rules").items()],
    }


def ip_filters_from_aws(document: Any, source: Path | str) -> list[dict[str, Any]]:
    """Return ``ip_filters`` entries from list-receipt-filters output."""
    root = Node(document, "", source).mapping({"Filters"})
    filters = []
    for item in root.get("Filters").items():
        entry = item.mapping({"Name", "IpFilter"}, {"Name", "IpFilter"})
        ip_filter = entry.get("IpFilter").mapping(
            {"Policy", "Cidr"}, {"Policy", "Cidr"}
        )
        filters.append(
            {
                "name": entry.get("Name").value,
                "policy": ip_filter.get("Policy").value,
                "cidr": ip_filter.get("Cidr").value,
            }
        )
    return filters


def _rule(node: Node) -> dict[str, Any]:
    rule = node.mapping(_RULE_KEYS, {"Name"})
    return {
        "name": rule.get("Name").value,
        # The API's defaults, not the console's (SES API, ReceiptRule).
        "enabled": rule.flag("Enabled", False),
        "recipients": list(rule.get("Recipients").expect(list, type(None)) or []),
        "tls_policy": rule.get("TlsPolicy").value or "Optional",
        "scan_enabled": rule.flag("ScanEnabled", False),
        "actions": [_action(item) for item in rule.get("Actions").items()],
    }


def _action(node: Node) -> dict[str, Any]:
    entry = node.mapping(set(_ACTIONS))
    if len(entry.raw) != 1:
        node.fail(f"expected exactly one of {', '.join(_ACTIONS)}")
    member = next(iter(entry.raw))

    key, fields = _ACTIONS[member]
    body = entry.get(member).mapping(set(fields))
    return {key: {fields[name]: value for name, value in body.raw.items()}}
