"""Loading configurations: what is accepted, and how errors name their key."""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path

import pytest
import yaml

from sesrx.config import LambdaAction, S3Action
from sesrx.errors import ConfigError
from sesrx.loader import load_config, load_default_config

from conftest import EXAMPLES
from helpers import call, rule, rule_set, store

ARN_PREFIX = "arn:aws:lambda:us-east-1:123456789012:function:"
EU_PREFIX = "arn:aws:lambda:eu-west-1:000000000042:function:"
STORE = rule("store", store("inbound"))


def load(write_config, document: dict) -> object:
    return load_config(write_config(document))


def error_of(write_config, document: dict) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load(write_config, document)
    return caught.value


def test_default_config_stores_everything():
    """The embedded default listens on 127.0.0.1:2525 and stores all mail in inbound."""
    config = load_default_config()

    assert (config.server.host, config.server.port) == ("127.0.0.1", 2525)
    assert config.verified_domains is None
    [rule] = config.rule_set.rules
    assert rule.recipients == ()
    assert rule.actions == (S3Action(bucket_name="inbound"),)
    assert config.data_dir == Path.cwd() / "sesrx-data"


@pytest.mark.parametrize(
    "path", sorted(EXAMPLES.glob("*/sesrx.yaml")), ids=lambda p: p.parent.name
)
def test_every_example_config_loads(path):
    """Each example under config/examples is a valid configuration."""
    config = load_config(path)

    assert config.rule_set.rules


def test_full_example_loads():
    """The commented full example in config/ is valid."""
    config = load_config(EXAMPLES.parent / "sesrx.yaml")

    assert len(config.rule_set.rules) >= 3


def test_relative_data_dir_is_taken_from_the_config_folder(write_config, tmp_path):
    """data_dir: ./x means next to the config file, not the working directory."""
    config = load(write_config, {"data_dir": "./stuff", "rule_set": rule_set(STORE)})

    assert config.data_dir == tmp_path / "stuff"


@pytest.mark.parametrize(
    ("document", "key_path", "words"),
    [
        (
            {"rule_set": rule_set(rule("r", store("Bad_Bucket")))},
            "rule_set.rules[0].actions[0].s3.bucket_name",
            "bucket name",
        ),
        ({"rule_set": rule_set(STORE, STORE)}, "rule_set.rules[1].name", "exists"),
        (
            {"rule_set": rule_set({"name": "-bad", "actions": []})},
            "rule_set.rules[0].name",
            "letter or digit",
        ),
        (
            {"rule_set": rule_set({"name": "r", "colour": "red"})},
            "rule_set.rules[0].colour",
            "unknown key",
        ),
        ({"rule_set": rule_set(STORE), "extra": 1}, "extra", "unknown key"),
        (
            {"server": {"port": "25"}, "rule_set": rule_set(STORE)},
            "server.port",
            "integer",
        ),
        (
            {"server": {"port": 70000}, "rule_set": rule_set(STORE)},
            "server.port",
            "65535",
        ),
        (
            {"server": {"bounce_mode": "loud"}, "rule_set": rule_set(STORE)},
            "server.bounce_mode",
            "reject, dsn",
        ),
        (
            {"rule_set": rule_set({"name": "r", "enabled": "yes please"})},
            "rule_set.rules[0].enabled",
            "true or false",
        ),
        (
            {"rule_set": rule_set({"name": "r", "tls_policy": "require"})},
            "rule_set.rules[0].tls_policy",
            "Optional, Require",
        ),
        (
            {"rule_set": rule_set({"name": "r", "recipients": ["not a domain"]})},
            "rule_set.rules[0].recipients[0]",
            "domain",
        ),
        (
            {
                "rule_set": rule_set(
                    {
                        "name": "r",
                        "actions": [{"s3": {"bucket_name": "abc"}, "stop": {}}],
                    }
                )
            },
            "rule_set.rules[0].actions[0]",
            "exactly one",
        ),
        (
            {
                "rule_set": rule_set(
                    {
                        "name": "r",
                        "actions": [
                            {
                                "add_header": {
                                    "header_name": "X Bad",
                                    "header_value": "v",
                                }
                            }
                        ],
                    }
                )
            },
            "rule_set.rules[0].actions[0].add_header.header_name",
            "letters",
        ),
        (
            {
                "rule_set": rule_set(
                    {
                        "name": "r",
                        "actions": [
                            {
                                "add_header": {
                                    "header_name": "X-A",
                                    "header_value": "a\nb",
                                }
                            }
                        ],
                    }
                )
            },
            "rule_set.rules[0].actions[0].add_header.header_value",
            "CR or LF",
        ),
        (
            {
                "rule_set": rule_set(
                    {
                        "name": "r",
                        "actions": [
                            {
                                "add_header": {
                                    "header_name": "X-A",
                                    "header_value": "v" * 2048,
                                }
                            }
                        ],
                    }
                )
            },
            "rule_set.rules[0].actions[0].add_header.header_value",
            "2048",
        ),
        (
            {
                "rule_set": rule_set(
                    {
                        "name": "r",
                        "actions": [
                            {
                                "bounce": {
                                    "smtp_reply_code": "250",
                                    "message": "m",
                                    "sender": "a@example.com",
                                }
                            }
                        ],
                    }
                )
            },
            "rule_set.rules[0].actions[0].bounce.smtp_reply_code",
            "4xx or 5xx",
        ),
        (
            {
                "rule_set": rule_set(
                    {
                        "name": "r",
                        "actions": [
                            {
                                "bounce": {
                                    "smtp_reply_code": "550",
                                    "status_code": "4.1.1",
                                    "message": "m",
                                    "sender": "a@example.com",
                                }
                            }
                        ],
                    }
                )
            },
            "rule_set.rules[0].actions[0].bounce.status_code",
            "does not agree",
        ),
        (
            {
                "rule_set": rule_set(
                    {
                        "name": "r",
                        "actions": [
                            {"bounce": {"smtp_reply_code": "550", "message": "m"}}
                        ],
                    }
                )
            },
            "rule_set.rules[0].actions[0].bounce.sender",
            "required",
        ),
        (
            {
                "rule_set": rule_set(
                    {"name": "r", "actions": [{"lambda": {"function_arn": "nope"}}]}
                )
            },
            "rule_set.rules[0].actions[0].lambda.function_arn",
            "not a key of functions",
        ),
        (
            {
                "rule_set": rule_set(
                    {
                        "name": "r",
                        "actions": [
                            {"lambda": {"function_arn": "missing_module:handler"}}
                        ],
                    }
                )
            },
            "rule_set.rules[0].actions[0].lambda.function_arn",
            "cannot import",
        ),
        (
            {
                "rule_set": rule_set(
                    {
                        "name": "r",
                        "actions": [{"lambda": {"function_arn": "handlers:absent"}}],
                    }
                )
            },
            "rule_set.rules[0].actions[0].lambda.function_arn",
            "no attribute",
        ),
        (
            {
                "rule_set": rule_set(
                    {
                        "name": "r",
                        "actions": [{"lambda": {"function_arn": ARN_PREFIX + "ghost"}}],
                    }
                )
            },
            "rule_set.rules[0].actions[0].lambda.function_arn",
            "not a key of functions",
        ),
        (
            {"rule_set": rule_set(rule("r", call("handlers:record", "Sync")))},
            "rule_set.rules[0].actions[0].lambda.invocation_type",
            "Event, RequestResponse",
        ),
        (
            {
                "functions": {"f": "handlers:record"},
                "rule_set": rule_set(
                    rule("r", call("arn:aws:lambda:eu-west-1:123456789012:function:f"))
                ),
            },
            "rule_set.rules[0].actions[0].lambda.function_arn",
            "not in aws.region us-east-1",
        ),
        (
            {"data_dir": "a\x00b", "rule_set": rule_set(STORE)},
            "data_dir",
            "NUL",
        ),
        (
            {"server": {"host": " "}, "rule_set": rule_set(STORE)},
            "server.host",
            "address to listen on",
        ),
        (
            {"server": {"hostname": "x\r\n250-INJECTED"}, "rule_set": rule_set(STORE)},
            "server.hostname",
            "host name",
        ),
        (
            {"server": {"hostname": "h\u00e9st"}, "rule_set": rule_set(STORE)},
            "server.hostname",
            "host name",
        ),
        (
            {"server": {"lambda_timeout": float("nan")}, "rule_set": rule_set(STORE)},
            "server.lambda_timeout",
            "at most 900",
        ),
        (
            {"server": {"lambda_timeout": 1e308}, "rule_set": rule_set(STORE)},
            "server.lambda_timeout",
            "at most 900",
        ),
        (
            {
                "rule_set": rule_set(
                    rule(
                        "r",
                        {
                            "bounce": {
                                "smtp_reply_code": "550",
                                "message": "Postfach nicht verf\u00fcgbar",
                                "sender": "a@example.com",
                            }
                        },
                    )
                )
            },
            "rule_set.rules[0].actions[0].bounce.message",
            "printable ASCII",
        ),
        (
            {
                "rule_set": rule_set(
                    rule("r", store("abc", object_key_prefix="a" * 256))
                )
            },
            "rule_set.rules[0].actions[0].s3.object_key_prefix",
            "longer than 255 bytes",
        ),
        (
            {
                "rule_set": rule_set(
                    rule("r", store("abc", object_key_prefix="\u6f22" * 86))
                )
            },
            "rule_set.rules[0].actions[0].s3.object_key_prefix",
            "longer than 255 bytes",
        ),
        (
            {"aws": {"account_id": 12345}, "rule_set": rule_set(STORE)},
            "aws.account_id",
            "12 digits",
        ),
        (
            {"functions": {"bad name": "handlers:record"}, "rule_set": rule_set(STORE)},
            "functions.bad name",
            "function name",
        ),
        ({"rule_set": {"rules": []}}, "rule_set.name", "required"),
        (
            {
                "rule_set": rule_set(
                    {
                        "name": "r",
                        "recipients": [f"u{i}@example.com" for i in range(101)],
                    }
                )
            },
            "rule_set.rules[0].recipients",
            "at most 100",
        ),
        (
            {"rule_set": rule_set({"name": "r", "actions": [{"stop": {}}] * 11})},
            "rule_set.rules[0].actions",
            "at most 10",
        ),
        (
            {"rule_set": rule_set(*[{"name": f"r{i}"} for i in range(201)])},
            "rule_set.rules",
            "at most 200",
        ),
        (
            {
                "dns": {"txt": {"sel._domainkey.example.com": 5}},
                "rule_set": rule_set(STORE),
            },
            "dns.txt.sel._domainkey.example.com",
            "string",
        ),
    ],
)
def test_error_names_the_key_path(write_config, tmp_path, document, key_path, words):
    """Every bad value is reported with the file, its key path and what was expected."""
    error = error_of(write_config, document)

    assert error.key_path == key_path
    assert words in error.problem
    assert str(tmp_path / "sesrx.yaml") in str(error)


def test_handler_that_fails_to_import_is_reported_at_load(write_config, tmp_path):
    """A handler raising at import fails the config load, not the first message."""
    (tmp_path / "broken_mod.py").write_text("raise ValueError('boom')\n")
    error = error_of(
        write_config,
        {"functions": {"f": "broken_mod:handler"}, "rule_set": rule_set(STORE)},
    )

    assert error.key_path == "functions.f"
    assert "ValueError: boom" in error.problem


def test_function_references_resolve_to_full_arns(write_config):
    """Names, ARNs and import strings all give events a full Lambda ARN."""
    config = load(
        write_config,
        {
            "aws": {"region": "eu-west-1", "account_id": "000000000042"},
            "functions": {"named": "handlers:record"},
            "rule_set": rule_set(
                {
                    "name": "r",
                    "actions": [
                        {"lambda": {"function_arn": "named"}},
                        {"lambda": {"function_arn": EU_PREFIX + "named"}},
                        {"lambda": {"function_arn": "handlers:record"}},
                    ],
                }
            ),
        },
    )
    actions = config.rule_set.rules[0].actions
    assert all(isinstance(a, LambdaAction) for a in actions)

    arns = [a.function.arn for a in actions]  # type: ignore[union-attr]
    assert arns == [
        EU_PREFIX + "named",
        EU_PREFIX + "named",
        EU_PREFIX + "handlers-record",
    ]
    assert actions[0].invocation_type == "Event"  # type: ignore[union-attr]


def test_yaml_syntax_error_is_a_config_error(tmp_path):
    """A file that is not YAML is reported, with the file name."""
    path = tmp_path / "bad.yaml"
    path.write_text("rule_set: [unclosed\n")

    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)


def test_same_module_name_in_two_config_folders(tmp_path):
    """Two configs with their own handlers.py each get their own module."""
    paths = []
    for name in ("one", "two"):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "samename_handlers.py").write_text(
            f"def handler(e, c):\n    return {name!r}\n"
        )
        document = {
            "functions": {"f": "samename_handlers:handler"},
            "rule_set": rule_set(STORE),
        }
        (folder / "sesrx.yaml").write_text(yaml.safe_dump(document))
        paths.append(folder / "sesrx.yaml")

    results = [load_config(p).functions["f"].handler({}, None) for p in paths]

    assert results == ["one", "two"]


def test_handler_named_like_a_standard_module_is_refused(write_config, tmp_path):
    """email.py beside the config cannot take the place of the email package."""
    (tmp_path / "email.py").write_text("def handler(e, c):\n    return None\n")

    document = {"functions": {"f": "email:handler"}, "rule_set": rule_set(STORE)}
    error = error_of(write_config, document)

    assert error.key_path == "functions.f"
    assert "standard library module 'email'" in error.problem
    assert importlib.import_module("email.generator")


def test_files_beside_the_config_do_not_shadow_the_standard_library(
    write_config, tmp_path
):
    """A json.py next to the config does not replace the json module."""
    (tmp_path / "json.py").write_text("raise RuntimeError('not the real json')\n")
    load(
        write_config,
        {"functions": {"f": "handlers:record"}, "rule_set": rule_set(STORE)},
    )

    assert importlib.reload(json).dumps([1]) == "[1]"


def test_a_key_given_twice_is_an_error(tmp_path):
    """YAML would keep the last of two equal keys; sesrx refuses the file."""
    path = tmp_path / "twice.yaml"
    path.write_text(
        "rule_set:\n  name: a\n  rules:\n    - name: r\n      actions:\n"
        "        - s3: {bucket_name: abc, bucket_name: other}\n"
    )

    with pytest.raises(
        ConfigError, match="line 6, column 34: duplicate key 'bucket_name'"
    ):
        load_config(path)


def test_merge_keys_may_be_overridden(tmp_path):
    """An explicit key beside a YAML merge key is not a duplicate."""
    path = tmp_path / "merge.yaml"
    path.write_text(
        "rule_set:\n  name: a\n  rules:\n    - name: r\n      actions:\n"
        "        - s3: &base {bucket_name: first, object_key_prefix: mail/}\n"
        "        - s3: {<<: *base, bucket_name: second}\n"
    )

    actions = load_config(path).rule_set.rules[0].actions

    assert actions[1] == S3Action(bucket_name="second", object_key_prefix="mail/")


def test_text_that_is_not_unicode_is_refused(tmp_path):
    """A YAML escape for a lone surrogate is reported, not a crash later."""
    path = tmp_path / "surrogate.yaml"
    path.write_text(
        "rule_set:\n  name: a\n  rules:\n    - name: r\n      actions:\n"
        '        - add_header: {header_name: X-A, header_value: "\\ud800"}\n'
    )

    with pytest.raises(ConfigError, match="not valid Unicode"):
        load_config(path)


def endless(folder: Path, kind: str) -> Path:
    """Return a path that reading to its end would never finish or fit."""
    path = folder / f"{kind}.yaml"
    if kind == "fifo":
        os.mkfifo(path)  # no writer: a plain read would wait for ever
    elif kind == "device":
        path.symlink_to("/dev/zero")
    else:  # a file larger than any configuration
        with path.open("wb") as stream:
            stream.truncate(64 * 1024 * 1024)
    return path


@pytest.mark.parametrize("kind", ["fifo", "device", "huge"])
@pytest.mark.parametrize("where", ["config", "rule_set_file"])
def test_a_file_that_never_ends_is_refused_at_once(tmp_path, kind, where):
    """A FIFO, a device or a huge file as the configuration or its rule set
    file is a config error naming it, not a wait or an out-of-memory crash."""
    path = endless(tmp_path, kind)
    if where == "rule_set_file":
        config = tmp_path / "sesrx.yaml"
        config.write_text(f"rule_set_file: {path.name}\n")
        path = config

    with pytest.raises(ConfigError, match=f"{kind}.yaml: cannot read the file: not a"):
        load_config(path)


def test_a_configuration_reached_through_a_link_loads(write_config, tmp_path):
    """Mounted configurations are often symbolic links (Kubernetes, Docker)."""
    path = write_config({"rule_set": rule_set(rule("r", store("inbound")))})
    link = tmp_path / "linked.yaml"
    link.symlink_to(path)

    assert load_config(link).rule_set.rules[0].name == "r"


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("in", "in/AMAZON_SES_SETUP_NOTIFICATION"),
        ("", "AMAZON_SES_SETUP_NOTIFICATION/"),
    ],
)
def test_a_prefix_inside_a_setup_notification_is_refused(write_config, first, second):
    """One path cannot be the setup object and a folder of messages locally."""
    path = write_config(
        {
            "rule_set": rule_set(
                rule("a", store("box", object_key_prefix=first)),
                rule("b", store("box", object_key_prefix=second)),
            )
        }
    )

    with pytest.raises(
        ConfigError,
        match=r"rules\[1\]\.actions\[0\]\.s3\.object_key_prefix: messages would go "
        r"under '[a-z/]*AMAZON_SES_SETUP_NOTIFICATION', the setup notification of "
        r"the S3 action at rule_set\.rules\[0\]",
    ):
        load_config(path)


def test_the_same_prefixes_in_other_buckets_load(write_config):
    """Only one bucket's folders can collide."""
    path = write_config(
        {
            "rule_set": rule_set(
                rule("a", store("box", object_key_prefix="in")),
                rule(
                    "b",
                    store(
                        "other", object_key_prefix="in/AMAZON_SES_SETUP_NOTIFICATION"
                    ),
                ),
            )
        }
    )

    assert len(load_config(path).rule_set.rules) == 2


def test_deep_nesting_is_a_config_error(tmp_path):
    """Absurdly nested YAML gives a config error, not a RecursionError."""
    path = tmp_path / "deep.yaml"
    path.write_text("rule_set: " + "[" * 100_000 + "\n")

    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)


@pytest.mark.parametrize(
    "body",
    ["import sys\nsys.exit(0)\n", "raise KeyboardInterrupt\n", "raise GeneratorExit\n"],
)
def test_handler_calling_exit_at_import_is_an_error(write_config, tmp_path, body):
    """sys.exit() and the like at import time are reported against the function."""
    (tmp_path / "quits.py").write_text(body)

    document = {"functions": {"f": "quits:handler"}, "rule_set": rule_set(STORE)}
    error = error_of(write_config, document)

    assert error.key_path == "functions.f"
    assert error.problem.startswith("importing 'quits' raised ")


@pytest.mark.parametrize(
    ("filters", "key_path", "words"),
    [
        (
            [{"name": "a", "policy": "Deny", "cidr": "10.0.0.0/8"}],
            "ip_filters[0].policy",
            "Allow, Block",
        ),
        (
            [{"name": "a", "policy": "Block", "cidr": "10.0.0.0/33"}],
            "ip_filters[0].cidr",
            "CIDR",
        ),
        (
            [{"name": "a", "policy": "Block", "cidr": "[::1]"}],
            "ip_filters[0].cidr",
            "CIDR",
        ),
        ([{"name": "a", "policy": "Block"}], "ip_filters[0].cidr", "required"),
        (
            [{"name": "a", "policy": "Block", "cidr": "10.0.0.1"}] * 2,
            "ip_filters[1].name",
            "exists",
        ),
    ],
)
def test_ip_filter_errors(write_config, filters, key_path, words):
    """Bad IP filters are reported by key path."""
    error = error_of(write_config, {"ip_filters": filters, "rule_set": rule_set(STORE)})

    assert error.key_path == key_path
    assert words in error.problem
