"""The events validate against aws-lambda-powertools' parser models.

Powertools is stricter than SES in places, and the tests keep to what it
accepts rather than bend sesrx: its SesReceiptAction allows only Event
invocations, its verdicts leave out DISABLED, and its commonHeaders require
From, To, Return-Path, Message-ID, Date and Subject, which real mail may lack.
"""

from __future__ import annotations

import json

import pytest
from aws_lambda_powertools.utilities.parser.models import SesModel, SnsModel

from helpers import call, make_message, read_calls, rule, rule_set, send, store

pytestmark = pytest.mark.e2e

TOPIC = "arn:aws:sns:us-east-1:123456789012:inbound"


def test_lambda_event_parses_as_ses_model(write_config, serve, tmp_path):
    """The Event invocation's event is a valid SesModel."""
    config = write_config(
        {"rule_set": rule_set(rule("r", call("handlers:record", "Event")))}
    )
    server = serve(config)

    send(server.port, make_message(extra=(("Cc", "c@example.com"),)))
    assert server.wait_idle()
    [called] = read_calls(tmp_path)

    parsed = SesModel.model_validate(called["event"])
    assert parsed.Records[0].ses.mail.commonHeaders.cc == ["c@example.com"]


def test_notification_parses_as_sns_model_with_ses_message(
    write_config, serve, tmp_path
):
    """The topic's envelope, as a Lambda subscriber gets it, is a valid SnsModel."""
    s3 = store("inbound", topic_arn=TOPIC)
    config = write_config({"rule_set": rule_set(rule("r", s3))})
    server = serve(config)

    send(server.port, make_message())
    envelope = json.loads((tmp_path / "data" / "sns" / "inbound.jsonl").read_text())
    # Lambda spells two URL keys its own way and adds MessageAttributes.
    lambda_record = {
        **{k: v for k, v in envelope.items() if not k.endswith("URL")},
        "SigningCertUrl": envelope["SigningCertURL"],
        "UnsubscribeUrl": envelope["UnsubscribeURL"],
        "MessageAttributes": {},
    }
    event = {
        "Records": [
            {
                "EventSource": "aws:sns",
                "EventVersion": "1.0",
                "EventSubscriptionArn": f"{TOPIC}:0b8c1d36-9c3b-4f2e-8a1e-2b5c5f0e9d11",
                "Sns": lambda_record,
            }
        ]
    }

    parsed = SnsModel.model_validate(event)
    message = json.loads(parsed.Records[0].Sns.Message)
    assert message["notificationType"] == "Received"
    assert message["receipt"]["action"]["type"] == "S3"
