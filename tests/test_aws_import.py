"""Rule sets and IP filters as the AWS CLI prints them."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from sesrx.config import AddHeaderAction, LambdaAction, S3Action, StopAction
from sesrx.errors import ConfigError
from sesrx.loader import load_config

from helpers import RECORDING_HANDLERS, make_message, read_trace, send

LAMBDA_ARN = "arn:aws:lambda:us-east-1:123456789012:function:f"
# The shape `aws ses describe-active-receipt-rule-set` prints (CLI v2 dates).
DESCRIBED = {
    "Metadata": {
        "Name": "default-rule-set",
        "CreatedTimestamp": "2016-07-15T16:25:59.607000+00:00",
    },
    "Rules": [
        {
            "Name": "store-and-notify",
            "Enabled": True,
            "TlsPolicy": "Optional",
            "Recipients": ["support@example.com", ".example.com"],
            "Actions": [
                {"AddHeaderAction": {"HeaderName": "X-Rule", "HeaderValue": "store"}},
                {
                    "S3Action": {
                        "BucketName": "my-inbound-bucket",
                        "ObjectKeyPrefix": "inbound/",
                        "IamRoleArn": "arn:aws:iam::123456789012:role/ses",
                    }
                },
                {
                    "LambdaAction": {
                        "FunctionArn": LAMBDA_ARN,
                        "InvocationType": "RequestResponse",
                    }
                },
                {"StopAction": {"Scope": "RuleSet"}},
            ],
            "ScanEnabled": True,
        },
        {"Name": "defaults", "Actions": [{"S3Action": {"BucketName": "other-bucket"}}]},
    ],
}
FILTERS = {
    "Filters": [
        {"Name": "all", "IpFilter": {"Policy": "Block", "Cidr": "0.0.0.0/0"}},
        {"Name": "me", "IpFilter": {"Policy": "Allow", "Cidr": "127.0.0.1"}},
    ]
}


@pytest.fixture
def aws_config(tmp_path):
    (tmp_path / "rules.json").write_text(json.dumps(DESCRIBED))
    (tmp_path / "filters.json").write_text(json.dumps(FILTERS))
    (tmp_path / "handlers.py").write_text(RECORDING_HANDLERS)
    document = {
        "data_dir": "./data",
        "server": {"port": 0, "api": {"port": 0}},
        "functions": {"f": "handlers:stop_rule_set"},
        "rule_set_file": "rules.json",
        "ip_filters_file": "filters.json",
    }
    path = tmp_path / "sesrx.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def test_described_rule_set_loads_with_api_defaults(aws_config):
    """A rule without Enabled or ScanEnabled is off and unscanned, as in the API."""
    config = load_config(aws_config)

    first, second = config.rule_set.rules
    assert config.rule_set.name == "default-rule-set"
    assert first.recipients == ("support@example.com", ".example.com")
    assert [type(a) for a in first.actions] == [
        AddHeaderAction, S3Action, LambdaAction, StopAction,
    ]  # fmt: skip
    assert first.actions[1] == S3Action(
        "my-inbound-bucket",
        "inbound/",
        iam_role_arn="arn:aws:iam::123456789012:role/ses",
    )
    assert (second.enabled, second.scan_enabled, second.tls_policy) == (
        False,
        False,
        "Optional",
    )
    assert [f.name for f in config.ip_filters] == ["all", "me"]


@pytest.mark.e2e
def test_described_rule_set_runs(aws_config, serve, tmp_path):
    """Mail runs through an imported rule set as through a YAML one."""
    server = serve(aws_config)

    sent = send(server.port, make_message(), rcpt_tos=["support@example.com"])
    rules = read_trace(tmp_path / "data", sent.message_id)["rules"]

    assert [a["type"] for a in rules[0]["actions"]] == [
        "AddHeader",
        "S3",
        "Lambda",
        "Stop",
    ]
    assert rules[1]["status"] == "not reached"


@pytest.mark.parametrize(
    ("document", "words"),
    [
        ({}, "no Metadata"),
        (
            {"Metadata": {"Name": "x"}, "Rules": [{"Name": "r", "Colour": 1}]},
            "Rules[0].Colour",
        ),
        (
            {
                "Metadata": {"Name": "x"},
                "Rules": [{"Name": "r", "Actions": [{"SNSAction": {}}]}],
            },
            "topic_arn: required key is missing",
        ),
    ],
)
def test_unusable_aws_output_is_a_config_error(tmp_path, document, words):
    """Problems in the AWS file are reported with its name and the AWS key path."""
    (tmp_path / "rules.json").write_text(json.dumps(document))
    path = tmp_path / "sesrx.yaml"
    path.write_text("rule_set_file: rules.json\n")

    with pytest.raises(ConfigError) as caught:
        load_config(path)

    assert words in str(caught.value)
    assert "rules.json" in str(caught.value)


def test_import_aws_prints_yaml_that_loads(aws_config, tmp_path):
    """sesrx import-aws prints the equivalent YAML, which loads to the same rules."""
    result = subprocess.run(
        [sys.executable, "-m", "sesrx", "import-aws", str(tmp_path / "rules.json"),
         "--ip-filters", str(tmp_path / "filters.json")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    converted = yaml.safe_load(result.stdout)
    converted["functions"] = {"f": "handlers:stop_rule_set"}
    path = tmp_path / "converted.yaml"
    path.write_text(yaml.safe_dump(converted))

    assert load_config(path).rule_set == load_config(aws_config).rule_set
