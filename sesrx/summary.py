"""A one-screen description of a configuration, for ``check-config``."""

from __future__ import annotations

from sesrx.config import (
    Action,
    AddHeaderAction,
    BounceAction,
    Config,
    ConnectAction,
    LambdaAction,
    S3Action,
    SnsAction,
    StopAction,
    WorkmailAction,
)
from sesrx.rules import is_verified
from sesrx.tag_list import is_base64, parse_tags

__all__ = ["buckets_line", "describe", "warnings"]


def describe(config: Config) -> str:
    """Return the rule set as a short table, with the server settings above."""
    server = config.server
    domains = (
        ", ".join(config.verified_domains)
        if config.verified_domains is not None
        else "every domain"
    )
    lines = [
        f"config:      {config.source_name}",
        f"listen:      {server.host}:{server.port} as {server.hostname}",
        f"processes:   {server.workers}",
        f"data:        {config.data_dir}",
        f"verified:    {domains}",
        f"bounce mode: {server.bounce_mode}",
        f"ip filters:  {_filters(config)}",
        f"buckets:     {buckets_line(config)}",
        f"rule set:    {config.rule_set.name} ({_rules(len(config.rule_set.rules))})",
    ]
    for number, rule in enumerate(config.rule_set.rules, start=1):
        state = "" if rule.enabled else " (disabled)"
        recipients = ", ".join(rule.recipients) or "all verified domains"
        tls = ", TLS required" if rule.tls_policy == "Require" else ""
        lines.append(f"  {number}. {rule.name}{state}: {recipients}{tls}")
        lines += [f"       - {_action(action, config)}" for action in rule.actions]

    return "\n".join(lines)


def _dkim_record_warnings(config: Config) -> list[str]:
    """Warn about DKIM key records that no signature could be checked with."""
    found = []
    for name, record in config.dns_txt.items():
        tags = parse_tags(record)
        is_key = "._domainkey." in f".{name}"
        if not is_key and tags.get("v") == "DKIM1":
            found.append(
                f"dns.txt.{name}: a DKIM key's name is <selector>._domainkey..."
            )
        if is_key and not is_base64(tags.get("p")):
            found.append(f"dns.txt.{name}: p= is not a base64 public key")
    return found


def buckets_line(config: Config) -> str:
    """Say where buckets live: which are on an endpoint, and the local folder."""
    remote = [
        f"{bucket.name} at {bucket.endpoint_url} ({bucket.region})"
        for bucket in config.buckets.values()
    ]
    local = f"folders in {config.data_dir / 's3'}"
    return f"{', '.join(remote)}; others are {local}" if remote else local


def _unused_bucket_warnings(config: Config) -> list[str]:
    """Warn about buckets: entries that no S3 action writes to (a typo?)."""
    used = {
        action.bucket_name
        for rule in config.rule_set.rules
        for action in rule.actions
        if isinstance(action, S3Action)
    }
    return [
        f"buckets.{name}: no S3 action writes to this bucket"
        for name in config.buckets
        if name not in used
    ]


def _filters(config: Config) -> str:
    if not config.ip_filters:
        return "none (every client may connect)"
    return ", ".join(f"{f.name} {f.policy} {f.network}" for f in config.ip_filters)


def _rules(count: int) -> str:
    return "1 rule" if count == 1 else f"{count} rules"


def _action(action: Action, config: Config) -> str:
    if isinstance(action, S3Action):
        where = f"s3://{action.bucket_name}/{action.object_key('<messageId>')}"
        remote = config.buckets.get(action.bucket_name)
        return f"S3 {where}" + (f" at {remote.endpoint_url}" if remote else "")
    if isinstance(action, LambdaAction):
        function = action.function
        return f"Lambda {function.name} ({action.invocation_type}) -> {function.spec}"
    if isinstance(action, BounceAction):
        return f"Bounce {action.reply!r} from {action.sender}"
    if isinstance(action, AddHeaderAction):
        return f"AddHeader {action.header_name}: {action.header_value}"
    if isinstance(action, StopAction):
        return "Stop"
    if isinstance(action, SnsAction):
        return f"SNS {action.topic_arn} ({action.encoding})"
    if isinstance(action, WorkmailAction | ConnectAction):
        return f"{type(action).__name__.removesuffix('Action')} (not emulated)"
    raise TypeError(f"unknown action {action!r}")


def warnings(config: Config) -> list[str]:
    """Return what loads but will not work as the author probably meant."""
    found = []
    verified = config.verified_domains
    for number, rule in enumerate(config.rule_set.rules):
        for index, entry in enumerate(rule.recipients):
            domain = entry.rpartition("@")[2].lstrip(".")
            if verified is not None and not is_verified("x@" + domain, verified):
                found.append(
                    f"rule_set.rules[{number}].recipients[{index}]: {entry} is not "
                    "in a verified domain, so mail to it is refused"
                )
    for rule in config.rule_set.rules:
        for action in rule.actions:
            if isinstance(action, WorkmailAction | ConnectAction):
                kind = type(action).__name__.removesuffix("Action")
                found.append(f"rule {rule.name}: {kind} actions are not emulated")
    found += _dkim_record_warnings(config)
    found += _unused_bucket_warnings(config)
    if verified is not None and not verified:
        found.append("verified_domains is empty, so every recipient is refused")
    return found
