"""A sesrx configuration as frozen, typed objects.

Field names are the SES API's member names in snake_case (``bucket_name``
for ``BucketName``). :mod:`sesrx.loader` builds these from YAML and checks
every value; nothing past it reads raw YAML, so two servers with different
configurations can share a process.
"""

from __future__ import annotations

from collections.abc import Mapping as MappingType
from dataclasses import dataclass, field
from ipaddress import IPv4Network, IPv6Network
from pathlib import Path
from types import MappingProxyType

from sesrx.imports import Handler

__all__ = [
    "Action",
    "AddHeaderAction",
    "ApiConfig",
    "AwsConfig",
    "BounceAction",
    "Config",
    "DnsZone",
    "Function",
    "IpFilter",
    "LambdaAction",
    "ReceiptRule",
    "RemoteBucket",
    "RuleSet",
    "S3Action",
    "ServerConfig",
    "SessionLimits",
    "SnsAction",
    "StopAction",
    "Topic",
    "TlsConfig",
    "WorkmailAction",
    "ConnectAction",
]

# Quotas of SES receiving (SES Developer Guide, "Quotas").
MAX_RULES = 200
MAX_ACTIONS = 10
MAX_RECIPIENTS = 100
MAX_IP_FILTERS = 100
SES_MAX_MESSAGE_SIZE = 40 * 1024 * 1024
SES_LAMBDA_TIMEOUT = 30.0
# A configuration or rule set file larger than this is refused, not read.
MAX_CONFIG_BYTES = 16 * 1024 * 1024

BOUNCE_MODES = ("reject", "dsn")
INVOCATION_TYPES = ("Event", "RequestResponse")
TLS_POLICIES = ("Optional", "Require")
DURABILITY = ("none", "fsync")


@dataclass(frozen=True, slots=True)
class TlsConfig:
    """STARTTLS, and implicit TLS on a second port when ``port`` is set."""

    cert: Path | None = None  # both None: a self-signed certificate
    key: Path | None = None
    port: int | None = None


@dataclass(frozen=True, slots=True)
class ApiConfig:
    """The HTTP API and web page: where they listen, how much they remember."""

    host: str = "127.0.0.1"
    port: int = 8025
    max_messages: int = 10_000  # newest messages listed; older ones stay on disk


@dataclass(frozen=True, slots=True)
class SessionLimits:
    """What one SMTP client may use; each limit has its own reply."""

    max_sessions: int = 200  # open connections; more get 421 at connect
    command_timeout: float = 300.0  # seconds for one command (RFC 5321 4.5.3.2)
    data_timeout: float = 600.0  # seconds from 354 to the final dot
    max_recipients: int = 1000  # accepted RCPT TO per message; more get 452
    max_header_size: int = 1024 * 1024  # bytes of header block; more get 552


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """The SMTP listener and how long things may take."""

    host: str = "127.0.0.1"
    port: int = 2525
    hostname: str = "inbound-smtp.us-east-1.amazonaws.com"
    max_message_size: int = SES_MAX_MESSAGE_SIZE
    bounce_mode: str = "reject"
    lambda_timeout: float = SES_LAMBDA_TIMEOUT
    grace_period: float = 10.0
    tls: TlsConfig | None = None
    proxy_protocol: bool = False
    api: ApiConfig | None = field(default_factory=ApiConfig)  # None: no API
    limits: SessionLimits = field(default_factory=SessionLimits)
    durability: str = "none"  # none | fsync
    workers: int = 1  # processes sharing the SMTP port (sesrx serve)


@dataclass(frozen=True, slots=True)
class AwsConfig:
    """The account and region that ARNs and events name."""

    region: str = "us-east-1"
    account_id: str = "123456789012"

    def lambda_arn(self, name: str) -> str:
        """Return the full ARN of the Lambda function ``name``."""
        return f"arn:aws:lambda:{self.region}:{self.account_id}:function:{name}"


@dataclass(frozen=True, slots=True)
class Function:
    """A Lambda function: its name, its ARN and the Python callable."""

    name: str
    arn: str
    spec: str
    handler: Handler = field(compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class S3Action:
    """Store the message in a bucket (SES ``S3Action``)."""

    bucket_name: str
    object_key_prefix: str = ""
    kms_key_arn: str | None = None
    topic_arn: str | None = None
    iam_role_arn: str | None = None

    def object_key(self, message_id: str) -> str:
        """Return the key SES gives the message under this prefix."""
        # A prefix without a trailing slash still makes a folder: "inbound"
        # stores "inbound/<id>" (captures from real SES, see the reference
        # section 3.1); "inbound/" does not double the slash.
        prefix = self.object_key_prefix
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        return prefix + message_id


@dataclass(frozen=True, slots=True)
class LambdaAction:
    """Call a Lambda handler (SES ``LambdaAction``)."""

    function: Function
    invocation_type: str = "Event"
    topic_arn: str | None = None


@dataclass(frozen=True, slots=True)
class BounceAction:
    """Bounce the message to its sender (SES ``BounceAction``)."""

    smtp_reply_code: str
    message: str
    sender: str
    status_code: str | None = None
    topic_arn: str | None = None

    @property
    def reply(self) -> str:
        """Return the SMTP reply line this bounce stands for."""
        parts = [self.smtp_reply_code, self.status_code, self.message]
        return " ".join(part for part in parts if part)


@dataclass(frozen=True, slots=True)
class AddHeaderAction:
    """Prepend a header for later actions (SES ``AddHeaderAction``)."""

    header_name: str
    header_value: str


@dataclass(frozen=True, slots=True)
class StopAction:
    """End the rule set (SES ``StopAction``)."""

    scope: str = "RuleSet"
    topic_arn: str | None = None


@dataclass(frozen=True, slots=True)
class SnsAction:
    """Publish the whole message to a topic (SES ``SNSAction``)."""

    topic_arn: str
    encoding: str = "UTF-8"  # UTF-8 | Base64


@dataclass(frozen=True, slots=True)
class Topic:
    """A local SNS topic: a JSON-lines file, and an HTTP subscriber if given."""

    name: str
    endpoint: str | None = None


@dataclass(frozen=True, slots=True)
class WorkmailAction:
    """Hand the message to Amazon WorkMail (SES ``WorkmailAction``); not emulated."""

    organization_arn: str
    topic_arn: str | None = None


@dataclass(frozen=True, slots=True)
class ConnectAction:
    """Start an Amazon Connect email contact (SES ``ConnectAction``); not emulated."""

    instance_arn: str
    iam_role_arn: str


Action = (
    S3Action
    | LambdaAction
    | BounceAction
    | AddHeaderAction
    | StopAction
    | SnsAction
    | WorkmailAction
    | ConnectAction
)


@dataclass(frozen=True, slots=True)
class ReceiptRule:
    """One receipt rule: which recipients, and what to do with their mail."""

    name: str
    actions: tuple[Action, ...] = ()
    enabled: bool = True
    recipients: tuple[str, ...] = ()
    tls_policy: str = "Optional"
    scan_enabled: bool = True


@dataclass(frozen=True, slots=True)
class RuleSet:
    """The active receipt rule set: rules in evaluation order."""

    name: str
    rules: tuple[ReceiptRule, ...] = ()


Records = MappingType[str, tuple[str, ...]]


def _no_records() -> Records:
    return MappingProxyType({})


def _no_topics() -> MappingType[str, Topic]:
    return MappingProxyType({})


def _no_buckets() -> MappingType[str, RemoteBucket]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class RemoteBucket:
    """A bucket kept on an S3-compatible endpoint instead of a local folder."""

    name: str
    endpoint_url: str
    region: str = "us-east-1"
    # Both or neither; neither lets boto3 find credentials its usual way.
    access_key_id: str | None = None
    secret_access_key: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class DnsZone:
    """A, AAAA and MX records for SPF checks (TXT records live in dns_txt)."""

    a: Records = field(default_factory=_no_records)
    aaaa: Records = field(default_factory=_no_records)
    mx: Records = field(default_factory=_no_records)  # "10 mx.example.com"
    system: bool = False  # names missing from the zone go to real DNS


@dataclass(frozen=True, slots=True)
class IpFilter:
    """A receipt IP filter (SES ``ReceiptFilter``)."""

    name: str
    policy: str  # Allow | Block
    network: IPv4Network | IPv6Network


@dataclass(frozen=True, slots=True)
class Config:
    """Everything a server needs, checked and frozen."""

    server: ServerConfig
    data_dir: Path
    aws: AwsConfig
    verified_domains: tuple[str, ...] | None
    dns_txt: MappingType[str, str]
    functions: MappingType[str, Function]
    rule_set: RuleSet
    source: Path | None = None
    ip_filters: tuple[IpFilter, ...] = ()
    dns: DnsZone = field(default_factory=DnsZone)
    topics: MappingType[str, Topic] = field(default_factory=_no_topics)
    # Buckets not named here are folders under data_dir/s3.
    buckets: MappingType[str, RemoteBucket] = field(default_factory=_no_buckets)

    @property
    def source_name(self) -> str:
        """Return the config file's path, or a note that it is embedded."""
        return str(self.source) if self.source else "(embedded default)"
