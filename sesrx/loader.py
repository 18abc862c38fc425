"""Read a YAML configuration file into the objects of :mod:`sesrx.config`.

Every value is checked here, once, and every complaint names the file and
the key path (``rule_set.rules[2].actions[0].s3.bucket_name``).
"""

from __future__ import annotations

import importlib.resources
import re
import urllib.parse
from collections.abc import Callable
from collections.abc import Mapping as MappingType
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from sesrx import validate
from sesrx._reader import Mapping, Node
from sesrx.aws_import import ip_filters_from_aws, read_json, rule_set_from_aws
from sesrx.config import (
    BOUNCE_MODES,
    DURABILITY,
    INVOCATION_TYPES,
    MAX_ACTIONS,
    MAX_CONFIG_BYTES,
    MAX_IP_FILTERS,
    MAX_RECIPIENTS,
    MAX_RULES,
    SES_LAMBDA_TIMEOUT,
    SES_MAX_MESSAGE_SIZE,
    TLS_POLICIES,
    Action,
    AddHeaderAction,
    ApiConfig,
    AwsConfig,
    BounceAction,
    Config,
    ConnectAction,
    DnsZone,
    Function,
    IpFilter,
    LambdaAction,
    ReceiptRule,
    RemoteBucket,
    RuleSet,
    S3Action,
    ServerConfig,
    SessionLimits,
    SnsAction,
    StopAction,
    TlsConfig,
    Topic,
    WorkmailAction,
)
from sesrx.errors import ConfigError, describe_error
from sesrx.imports import HandlerImportError, import_callable
from sesrx.remote_s3 import boto3_problem
from sesrx.setup_notice import SETUP_KEY
from sesrx.storage import read_regular_file

__all__ = ["load_config", "load_default_config", "load_document"]

_LAMBDA_ARN = re.compile(
    r"^arn:aws[a-z-]*:lambda:(?P<region>[a-z0-9-]+):(?P<account>\d{12}):"
    r"function:(?P<name>[A-Za-z0-9_-]{1,64})(?::[A-Za-z0-9$_-]+)?$"
)
_HOSTNAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?")
_SNS_ARN = re.compile(r"^arn:aws[a-z-]*:sns:[a-z0-9-]+:\d{12}:[A-Za-z0-9_-]{1,256}$")


def load_config(path: Path | str) -> Config:
    """Load and check the configuration file at ``path``."""
    path = Path(path)
    try:
        raw = read_regular_file(path, MAX_CONFIG_BYTES, follow_links=True)
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(path, "", f"cannot read the file: {exc}") from exc

    try:
        return _load_text(text, path, path.resolve().parent)
    except (ValueError, RecursionError) as exc:
        # Values YAML or JSON cannot turn into Python ones (an integer of
        # thousands of digits, nesting past the recursion limit).
        raise ConfigError(path, "", f"cannot be read: {describe_error(exc)}") from exc


def load_document(document: Any, base_dir: Path, source: str) -> Config:
    """Check a configuration given as Python data (what the YAML would hold).

    Relative paths and handler modules are looked for in ``base_dir``;
    errors name ``source`` instead of a file.
    """
    try:
        return _build(document, source, base_dir)
    except (ValueError, RecursionError) as exc:
        raise ConfigError(source, "", f"cannot be read: {describe_error(exc)}") from exc


def load_default_config() -> Config:
    """Load the embedded default: every domain verified, all mail stored."""
    text = importlib.resources.files("sesrx").joinpath("default.yaml").read_text()
    config = _load_text(text, "(embedded default)", Path.cwd())
    return Config(**{**_fields(config), "source": None})


def _fields(config: Config) -> dict[str, Any]:
    return {name: getattr(config, name) for name in Config.__dataclass_fields__}


class _StrictLoader(yaml.SafeLoader):
    """A YAML loader that refuses a key given twice in one mapping."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> Any:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # "<<: *anchor" may be overridden by explicit keys
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, str):
                continue
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _yaml_problem(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        return f"line {mark.line + 1}, column {mark.column + 1}: {exc.problem}"
    return str(exc)


def _load_text(text: str, source: Path | str, base_dir: Path) -> Config:
    try:
        document = yaml.load(text, Loader=_StrictLoader)
    except yaml.YAMLError as exc:
        raise ConfigError(source, "", f"not valid YAML: {_yaml_problem(exc)}") from exc
    except RecursionError as exc:
        raise ConfigError(source, "", "not valid YAML: nested too deeply") from exc
    return _build(document, source, base_dir)


def _build(document: Any, source: Path | str, base_dir: Path) -> Config:
    root = Node(document, "", source).mapping(
        {
            "server",
            "data_dir",
            "aws",
            "verified_domains",
            "dns",
            "functions",
            "rule_set",
            "rule_set_file",
            "ip_filters",
            "ip_filters_file",
            "topics",
            "buckets",
        },
    )
    aws = _aws(root.get("aws"))
    functions = _functions(root.get("functions"), aws, base_dir)
    rule_set = _either(root, "rule_set", base_dir, rule_set_from_aws)
    dns_txt, dns_zone = _dns(root.get("dns"))
    ip_filters = _either(root, "ip_filters", base_dir, ip_filters_from_aws)
    buckets = _buckets(root.get("buckets"), aws)
    rules = _rule_set(rule_set, functions, aws, base_dir)
    _check_folders(rules, rule_set, buckets)
    return Config(
        server=_server(root.get("server"), aws, base_dir),
        data_dir=base_dir / root.text("data_dir", "./sesrx-data"),
        aws=aws,
        verified_domains=_verified_domains(root.get("verified_domains")),
        dns_txt=dns_txt,
        functions=functions,
        rule_set=rules,
        source=source if isinstance(source, Path) else None,
        ip_filters=_ip_filters(ip_filters),
        dns=dns_zone,
        topics=_topics(root.get("topics")),
        buckets=buckets,
    )


def _check_folders(
    rule_set: RuleSet, node: Node, buckets: MappingType[str, RemoteBucket]
) -> None:
    """Refuse a prefix whose folder another S3 action's setup object occupies.

    S3 keys are flat, so ``in/AMAZON_SES_SETUP_NOTIFICATION`` can be an object
    and the start of other keys at once; a local bucket is a folder tree, and
    one path cannot be a file and a folder.
    """
    places = [
        (action, f"{node.path}.rules[{r}].actions[{a}].s3.object_key_prefix")
        for r, rule in enumerate(rule_set.rules)
        for a, action in enumerate(rule.actions)
        if isinstance(action, S3Action) and action.bucket_name not in buckets
    ]
    setups: dict[tuple[str, str], str] = {}
    for action, where in places:
        setups.setdefault((action.bucket_name, action.object_key(SETUP_KEY)), where)
    for action, where in places:
        # "a/b/" is a folder in "a" and in "a/b": neither may be a setup object.
        parts = action.object_key("").split("/")[:-1]
        for depth in range(1, len(parts) + 1):
            setup = "/".join(parts[:depth])
            other_where = setups.get((action.bucket_name, setup))
            if other_where is not None:
                raise ConfigError(
                    node.source,
                    where,
                    f"messages would go under {setup!r}, the setup notification "
                    f"of the S3 action at {other_where}; in a local bucket one "
                    "path cannot be both a file and a folder",
                )


def _either(
    root: Mapping, key: str, base_dir: Path, convert: Callable[[Any, Path], Any]
) -> Node:
    """Return ``key``'s node, or one made from the AWS CLI output in ``key_file``.

    The file's values are then checked as if written under ``key``; errors
    name the file and that key path.
    """
    file_key = f"{key}_file"
    if key in root and file_key in root:
        root.get(file_key).fail(f"give {key} or {file_key}, not both")
    if file_key not in root:
        if key == "rule_set" and key not in root:
            root.get(key).fail("required key is missing (or give rule_set_file)")
        return root.get(key)

    file_node = root.get(file_key)
    path = base_dir / str(file_node.expect(str))
    return Node(convert(read_json(path), path), key, path)


def _server(node: Node, aws: AwsConfig, base_dir: Path) -> ServerConfig:
    server = node.mapping(
        {
            "host",
            "port",
            "hostname",
            "max_message_size",
            "bounce_mode",
            "lambda_timeout",
            "grace_period",
            "tls",
            "proxy_protocol",
            "api",
            "durability",
            "workers",
            *_LIMIT_KEYS,
        }
    )
    port = _port(server, "port", 2525)

    host = server.text("host", "127.0.0.1")
    if not host.strip():
        server.get("host").fail("expected an address to listen on, such as 127.0.0.1")
    hostname = server.text("hostname", f"inbound-smtp.{aws.region}.amazonaws.com")
    if not _HOSTNAME.fullmatch(hostname):
        server.get("hostname").fail(
            "expected a host name of ASCII letters, digits, '-' and '.', "
            f"got {hostname!r}"
        )

    return ServerConfig(
        host=host,
        port=port,
        hostname=hostname,
        max_message_size=server.integer(
            "max_message_size", SES_MAX_MESSAGE_SIZE, minimum=1
        ),
        bounce_mode=server.choice("bounce_mode", BOUNCE_MODES, "reject"),
        # Lambda runs a function for at most 15 minutes.
        lambda_timeout=server.number("lambda_timeout", SES_LAMBDA_TIMEOUT, 900),
        grace_period=server.number("grace_period", 10.0, 3600),
        tls=_tls(server.get("tls"), base_dir),
        proxy_protocol=server.flag("proxy_protocol", False),
        api=_api(server.get("api")),
        limits=_limits(server),
        durability=server.choice("durability", DURABILITY, "none"),
        workers=_workers(server),
    )


MAX_WORKERS = 64


def _workers(server: Mapping) -> int:
    workers = server.integer("workers", 1, minimum=1)
    if workers > MAX_WORKERS:
        server.get("workers").fail(
            f"expected at most {MAX_WORKERS} processes, got {workers}"
        )
    return workers


DAY = 86400.0
_LIMIT_KEYS = (
    "max_sessions",
    "command_timeout",
    "data_timeout",
    "max_recipients",
    "max_header_size",
)


def _limits(server: Mapping) -> SessionLimits:
    """Read the session limits, which sit among the other server keys."""
    default = SessionLimits()
    return SessionLimits(
        max_sessions=server.integer("max_sessions", default.max_sessions, minimum=1),
        command_timeout=server.number(
            "command_timeout", default.command_timeout, 86400
        ),
        data_timeout=server.number("data_timeout", default.data_timeout, 86400),
        max_recipients=server.integer(
            "max_recipients", default.max_recipients, minimum=1
        ),
        max_header_size=server.integer(
            "max_header_size", default.max_header_size, minimum=1
        ),
    )


def _api(node: Node) -> ApiConfig | None:
    """Read ``api``: absent for the defaults, ``false`` for none, or a mapping."""
    if node.value is None or node.value is True:
        return ApiConfig()
    if node.value is False:
        return None
    api = node.mapping({"host", "port", "max_messages"})
    host = api.text("host", "127.0.0.1")
    if not host.strip():
        api.get("host").fail("expected an address to listen on, such as 127.0.0.1")
    return ApiConfig(
        host=host,
        port=_port(api, "port", 8025),
        max_messages=api.integer("max_messages", 10_000, minimum=1),
    )


def _port(mapping: Mapping, key: str, default: int) -> int:
    port = mapping.integer(key, default)
    if port > 65535:
        mapping.get(key).fail(f"expected a port number up to 65535, got {port}")
    return port


def _tls(node: Node, base_dir: Path) -> TlsConfig | None:
    """Read ``tls``: absent, ``auto``, or ``{cert, key, port}``."""
    if node.value is None:
        return None
    if node.value == "auto":
        return TlsConfig()
    if isinstance(node.value, str):
        node.fail(
            f"expected auto or a mapping of cert, key and port, got {node.value!r}"
        )

    tls = node.mapping({"cert", "key", "port"})
    if ("cert" in tls) != ("key" in tls):
        node.fail("give both cert and key, or neither for a self-signed certificate")
    port = _port(tls, "port", 0) if "port" in tls else None
    if "cert" not in tls:
        return TlsConfig(port=port)

    paths = [base_dir / tls.text(key) for key in ("cert", "key")]
    for key, path in zip(("cert", "key"), paths, strict=True):
        if not path.is_file():
            tls.get(key).fail(f"no such file: {path}")
    return TlsConfig(cert=paths[0], key=paths[1], port=port)


def _aws(node: Node) -> AwsConfig:
    aws = node.mapping({"region", "account_id"})
    region = aws.text("region", "us-east-1")
    if not re.fullmatch(r"[a-z]{2}(-[a-z]+)+-\d", region):
        aws.get("region").fail(
            f"expected an AWS region such as us-east-1, got {region!r}"
        )

    account = aws.get("account_id")
    account_id = "123456789012" if account.value is None else str(account.value)
    if not re.fullmatch(r"\d{12}", account_id):
        account.fail(
            f"expected 12 digits (quote it to keep leading zeros), got {account_id!r}"
        )

    return AwsConfig(region=region, account_id=account_id)


def _ip_filters(node: Node) -> tuple[IpFilter, ...]:
    filters: list[IpFilter] = []
    for item in node.items():
        entry = item.mapping(
            {"name", "policy", "cidr"}, required={"name", "policy", "cidr"}
        )
        name_node, cidr_node = entry.get("name"), entry.get("cidr")
        name = validate.resource_name(name_node.expect(str), name_node)
        if any(existing.name == name for existing in filters):
            name_node.fail(f"a filter named {name!r} exists")
        filters.append(
            IpFilter(
                name=name,
                policy=entry.choice("policy", ("Allow", "Block"), "Block"),
                network=validate.cidr(cidr_node.expect(str), cidr_node),
            )
        )

    if len(filters) > MAX_IP_FILTERS:
        node.fail(f"SES allows at most {MAX_IP_FILTERS} IP filters")
    return tuple(filters)


def _verified_domains(node: Node) -> tuple[str, ...] | None:
    if node.value is None:
        return None
    return tuple(validate.domain(item.expect(str), item) for item in node.items())


def _dns(node: Node) -> tuple[MappingType[str, str], DnsZone]:
    """Read the offline zone: TXT for DKIM, SPF and DMARC; A, AAAA, MX for SPF."""
    dns = node.mapping({"txt", "a", "aaaa", "mx", "resolver"})
    txt: dict[str, str] = {}
    for name, record in dns.get("txt").members():
        txt[validate.dns_name(name, record)] = _txt_value(record)

    zone = DnsZone(
        a=_records(dns.get("a"), validate.ipv4),
        aaaa=_records(dns.get("aaaa"), validate.ipv6),
        mx=_records(dns.get("mx"), validate.mx),
        system=dns.choice("resolver", ("offline", "system"), "offline") == "system",
    )
    return MappingProxyType(txt), zone


def _records(
    node: Node, check: Callable[[str, Node], str]
) -> MappingType[str, tuple[str, ...]]:
    """Read ``name: value`` or ``name: [values]`` records."""
    records: dict[str, tuple[str, ...]] = {}
    for name, record in node.members():
        items = list(record.items()) if isinstance(record.value, list) else [record]
        values = tuple(check(str(item.expect(str)), item) for item in items)
        records[validate.dns_name(name, record)] = values
    return MappingProxyType(records)


def _txt_value(record: Node) -> str:
    """Return a TXT record; a list of strings is joined, as DNS joins chunks."""
    if isinstance(record.value, list):
        return "".join(str(item.expect(str)) for item in record.items())
    return str(record.expect(str))


def _functions(
    node: Node, aws: AwsConfig, base_dir: Path
) -> MappingType[str, Function]:
    functions: dict[str, Function] = {}
    for name, entry in node.members():
        if not validate.FUNCTION_NAME.fullmatch(name):
            entry.fail("expected a Lambda function name (letters, digits, - and _)")
        functions[name] = _import(entry, name, aws, base_dir)

    return MappingProxyType(functions)


def _import(node: Node, name: str, aws: AwsConfig, base_dir: Path) -> Function:
    spec = node.expect(str)
    try:
        handler = import_callable(spec, base_dir)
    except HandlerImportError as exc:
        node.fail(str(exc))

    return Function(name=name, arn=aws.lambda_arn(name), spec=spec, handler=handler)


def _rule_set(
    node: Node, functions: MappingType[str, Function], aws: AwsConfig, base_dir: Path
) -> RuleSet:
    rule_set = node.mapping({"name", "rules"}, required={"name"})
    name_node = rule_set.get("name")
    name = validate.resource_name(name_node.expect(str), name_node)

    rules: list[ReceiptRule] = []
    seen: set[str] = set()
    for item in rule_set.get("rules").items():
        rule = _rule(item, functions, aws, base_dir)
        if rule.name in seen:
            item.child("name", rule.name).fail(f"a rule named {rule.name!r} exists")
        seen.add(rule.name)
        rules.append(rule)

    if len(rules) > MAX_RULES:
        rule_set.get("rules").fail(f"SES allows at most {MAX_RULES} rules per set")
    return RuleSet(name=name, rules=tuple(rules))


def _rule(
    node: Node, functions: MappingType[str, Function], aws: AwsConfig, base_dir: Path
) -> ReceiptRule:
    rule = node.mapping(
        {"name", "enabled", "recipients", "tls_policy", "scan_enabled", "actions"},
        required={"name"},
    )
    name_node = rule.get("name")
    recipients = tuple(
        validate.recipient(item.expect(str), item)
        for item in rule.get("recipients").items()
    )
    if len(recipients) > MAX_RECIPIENTS:
        rule.get("recipients").fail(f"SES allows at most {MAX_RECIPIENTS} recipients")

    actions = tuple(
        _action(item, functions, aws, base_dir) for item in rule.get("actions").items()
    )
    if len(actions) > MAX_ACTIONS:
        rule.get("actions").fail(f"SES allows at most {MAX_ACTIONS} actions per rule")

    return ReceiptRule(
        name=validate.resource_name(name_node.expect(str), name_node),
        actions=actions,
        enabled=rule.flag("enabled", True),
        recipients=recipients,
        tls_policy=rule.choice("tls_policy", TLS_POLICIES, "Optional"),
        scan_enabled=rule.flag("scan_enabled", True),
    )


_ACTION_KEYS = (
    "s3", "lambda", "bounce", "add_header", "stop", "sns", "workmail", "connect",
)  # fmt: skip
_WORKMAIL_ARN = re.compile(
    r"arn:aws[a-z-]*:workmail:[a-z0-9-]+:\d{12}:organization/m-[a-z0-9]+"
)
_CONNECT_ARN = re.compile(
    r"arn:aws[a-z-]*:connect:[a-z0-9-]+:\d{12}:instance/[0-9a-f-]{36}"
)
_ROLE_ARN = re.compile(r"arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]{1,512}")


def _action(
    node: Node, functions: MappingType[str, Function], aws: AwsConfig, base_dir: Path
) -> Action:
    entry = node.mapping(_ACTION_KEYS)
    if len(entry.raw) != 1:
        node.fail(f"expected exactly one of {', '.join(_ACTION_KEYS)}")

    kind = next(iter(entry.raw))
    body = entry.get(kind)
    if kind == "s3":
        return _s3(body)
    if kind == "lambda":
        return _lambda(body, functions, aws, base_dir)
    if kind == "bounce":
        return _bounce(body)
    if kind == "add_header":
        return _add_header(body)
    if kind == "sns":
        return _sns(body)
    if kind == "workmail":
        return _workmail(body)
    if kind == "connect":
        return _connect(body)
    return _stop(body)


def _arn(mapping: Mapping, key: str, pattern: re.Pattern[str], what: str) -> str:
    node = mapping.get(key)
    value = str(node.expect(str))
    if not pattern.fullmatch(value):
        node.fail(f"expected {what}, got {value!r}")
    return value


def _sns(node: Node) -> SnsAction:
    sns = node.mapping({"topic_arn", "encoding"}, {"topic_arn"})
    topic = _topic(sns)
    assert topic is not None  # required above
    return SnsAction(
        topic_arn=topic, encoding=sns.choice("encoding", ("UTF-8", "Base64"), "UTF-8")
    )


def _topics(node: Node) -> MappingType[str, Topic]:
    """Read ``topics: {name: {endpoint: http://...}}``."""
    topics: dict[str, Topic] = {}
    for name, entry in node.members():
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,256}", name):
            entry.fail("expected a topic name of letters, digits, '-' and '_'")
        topic = entry.mapping({"endpoint"})
        endpoint = topic.text("endpoint") if "endpoint" in topic else None
        if endpoint is not None and not re.fullmatch(r"https?://\S+", endpoint):
            topic.get("endpoint").fail(
                f"expected an http:// or https:// URL, got {endpoint!r}"
            )
        topics[name] = Topic(name=name, endpoint=endpoint)
    return MappingProxyType(topics)


_BUCKET_KEYS = ("endpoint_url", "region", "access_key_id", "secret_access_key")
# Loose on purpose: S3-compatible stores name regions freely (Garage's is
# "garage", Cloudflare R2's "auto").
_REGION = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def _buckets(node: Node, aws: AwsConfig) -> MappingType[str, RemoteBucket]:
    """Read ``buckets: {name: {endpoint_url, region, access_key_id, ...}}``."""
    buckets: dict[str, RemoteBucket] = {}
    for name, entry in node.members():
        buckets[validate.bucket_name(name, entry)] = _bucket(name, entry, aws)
    return MappingProxyType(buckets)


def _bucket(name: str, node: Node, aws: AwsConfig) -> RemoteBucket:
    bucket = node.mapping(_BUCKET_KEYS, required={"endpoint_url"})
    endpoint_url = _endpoint_url(bucket.get("endpoint_url"))
    region = bucket.text("region", aws.region)
    if not _REGION.fullmatch(region):
        bucket.get("region").fail(
            f"expected a region such as us-east-1, got {region!r}"
        )
    key_id, secret = _credentials(bucket)

    problem = boto3_problem()
    if problem:
        node.fail(problem)
    return RemoteBucket(name, endpoint_url, region, key_id, secret)


def _endpoint_url(node: Node) -> str:
    url = str(node.expect(str))
    try:
        parts = urllib.parse.urlsplit(url)
        usable = (
            parts.scheme in ("http", "https")
            and bool(parts.hostname)
            and parts.port != 0  # .port raises ValueError past 65535
            and not (parts.query or parts.fragment)
            and not any(c.isspace() for c in url)
        )
    except ValueError:  # a port that is not a number, a broken IPv6 literal
        usable = False
    if not usable:
        node.fail(f"expected an http:// or https:// URL, got {url!r}")
    return url


def _credentials(bucket: Mapping) -> tuple[str | None, str | None]:
    """Return both keys, or neither (boto3 then finds credentials itself)."""
    names = ("access_key_id", "secret_access_key")
    given = [name for name in names if name in bucket]
    if len(given) == 1:
        other = names[1 - names.index(given[0])]
        bucket.get(other).fail(f"required with {given[0]} (give both or neither)")
    if not given:
        return None, None

    for name in names:
        if not bucket.text(name):
            bucket.get(name).fail("expected a non-empty string")
    return bucket.text(names[0]), bucket.text(names[1])


def _workmail(node: Node) -> WorkmailAction:
    workmail = node.mapping({"organization_arn", "topic_arn"}, {"organization_arn"})
    what = "a WorkMail organization ARN"
    return WorkmailAction(
        organization_arn=_arn(workmail, "organization_arn", _WORKMAIL_ARN, what),
        topic_arn=_topic(workmail),
    )


def _connect(node: Node) -> ConnectAction:
    keys = {"instance_arn", "iam_role_arn"}
    connect = node.mapping(keys, required=keys)
    what = "a Connect instance ARN"
    return ConnectAction(
        instance_arn=_arn(connect, "instance_arn", _CONNECT_ARN, what),
        iam_role_arn=_arn(connect, "iam_role_arn", _ROLE_ARN, "an IAM role ARN"),
    )


def _topic(mapping: Mapping) -> str | None:
    node = mapping.get("topic_arn")
    if node.value is None:
        return None
    arn = node.expect(str)
    if not _SNS_ARN.fullmatch(arn):
        node.fail(f"expected an SNS topic ARN, got {arn!r}")
    return str(arn)


def _s3(node: Node) -> S3Action:
    s3 = node.mapping(
        {
            "bucket_name",
            "object_key_prefix",
            "kms_key_arn",
            "topic_arn",
            "iam_role_arn",
        },
        required={"bucket_name"},
    )
    bucket = s3.get("bucket_name")
    prefix = s3.get("object_key_prefix")
    return S3Action(
        bucket_name=validate.bucket_name(bucket.expect(str), bucket),
        object_key_prefix=validate.key_prefix(s3.text("object_key_prefix", ""), prefix),
        kms_key_arn=s3.text("kms_key_arn") if "kms_key_arn" in s3 else None,
        iam_role_arn=s3.text("iam_role_arn") if "iam_role_arn" in s3 else None,
        topic_arn=_topic(s3),
    )


def _lambda(
    node: Node, functions: MappingType[str, Function], aws: AwsConfig, base_dir: Path
) -> LambdaAction:
    action = node.mapping(
        {"function_arn", "invocation_type", "topic_arn"}, required={"function_arn"}
    )
    return LambdaAction(
        function=_function(action.get("function_arn"), functions, aws, base_dir),
        invocation_type=action.choice("invocation_type", INVOCATION_TYPES, "Event"),
        topic_arn=_topic(action),
    )


def _function(
    node: Node, functions: MappingType[str, Function], aws: AwsConfig, base_dir: Path
) -> Function:
    """Resolve a name from ``functions:``, a Lambda ARN, or an import string."""
    reference = node.expect(str)
    if reference in functions:
        return functions[reference]

    arn = _LAMBDA_ARN.fullmatch(reference)
    if arn and arn["region"] != aws.region:
        # SES invokes only functions in its own region (SES Developer Guide,
        # "Regions and Amazon SES").
        node.fail(f"the function is in {arn['region']}, not in aws.region {aws.region}")
    if arn:
        name = arn["name"]
        if name not in functions:
            node.fail(f"function {name!r} of this ARN is not a key of functions:")
        return functions[name]

    if reference.startswith("arn:"):
        node.fail(f"expected a Lambda function ARN, got {reference!r}")
    if ":" not in reference:
        known = ", ".join(functions) or "none defined"
        node.fail(
            f"{reference!r} is not a key of functions: ({known}) "
            "nor a 'module:attribute' import string"
        )
    # An import string names the function after its dotted path.
    name = re.sub(r"[^A-Za-z0-9_-]", "-", reference)[:64]
    return _import(node, name, aws, base_dir)


def _bounce(node: Node) -> BounceAction:
    bounce = node.mapping(
        {"smtp_reply_code", "status_code", "message", "sender", "topic_arn"},
        required={"smtp_reply_code", "message", "sender"},
    )
    code_node = bounce.get("smtp_reply_code")
    code = str(code_node.expect(str, int))
    if not re.fullmatch(r"[45]\d\d", code):
        code_node.fail(f"expected a 4xx or 5xx SMTP reply code, got {code!r}")

    status_node = bounce.get("status_code")
    status = None if status_node.value is None else str(status_node.expect(str))
    if status is not None and not re.fullmatch(r"[45]\.\d{1,3}\.\d{1,3}", status):
        status_node.fail(f"expected an enhanced status code like 5.1.1, got {status!r}")
    if status is not None and status[0] != code[0]:
        status_node.fail(f"status {status} does not agree with reply code {code}")

    message_node = bounce.get("message")
    sender_node = bounce.get("sender")
    return BounceAction(
        smtp_reply_code=code,
        message=validate.reply_text(message_node.expect(str), message_node),
        sender=validate.address(sender_node.expect(str), sender_node),
        status_code=status,
        topic_arn=_topic(bounce),
    )


def _add_header(node: Node) -> AddHeaderAction:
    header = node.mapping(
        {"header_name", "header_value"}, {"header_name", "header_value"}
    )
    name = header.get("header_name")
    value = header.get("header_value")
    return AddHeaderAction(
        header_name=validate.header_name(name.expect(str), name),
        header_value=validate.header_value(value.expect(str), value),
    )


def _stop(node: Node) -> StopAction:
    stop = node.mapping({"scope", "topic_arn"})
    return StopAction(
        scope=stop.choice("scope", ("RuleSet",), "RuleSet"), topic_arn=_topic(stop)
    )
