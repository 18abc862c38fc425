"""Bounce, add-header, stop and S3 actions, through real SMTP."""

from __future__ import annotations

import email
import email.policy

import pytest

from helpers import (
    BOUNCE,
    call,
    make_message,
    read_calls,
    read_trace,
    rule,
    rule_set,
    send,
    store,
    stored_messages,
)

pytestmark = pytest.mark.e2e


def test_bounce_of_every_recipient_replaces_the_reply(write_config, serve, tmp_path):
    """With bounce_mode reject, bouncing all recipients answers DATA with the bounce."""
    config = write_config(
        {
            "rule_set": rule_set(
                rule("store", store("kept")),
                {"name": "bounce", "actions": [BOUNCE]},
            )
        }
    )
    server = serve(config)

    sent = send(
        server.port, make_message(), rcpt_tos=["a@example.com", "b@example.com"]
    )

    assert sent.data == (550, "5.1.1 Mailbox does not exist")
    assert len(stored_messages(tmp_path / "data" / "s3" / "kept")) == 1
    assert list((tmp_path / "data" / "outbox").iterdir()) == []


def test_partial_bounce_keeps_250_and_writes_a_dsn(write_config, serve, tmp_path):
    """Bouncing some recipients answers 250 and mails an RFC 3464 report."""
    config = write_config(
        {
            "rule_set": rule_set(
                {
                    "name": "gone",
                    "recipients": ["gone@example.com"],
                    "actions": [BOUNCE],
                },
                rule("store", store("kept")),
            )
        }
    )
    server = serve(config)

    sent = send(
        server.port, make_message(), rcpt_tos=["gone@example.com", "b@example.com"]
    )
    [dsn_path] = (tmp_path / "data" / "outbox").iterdir()
    dsn = email.message_from_bytes(dsn_path.read_bytes(), policy=email.policy.default)

    assert sent.code == 250
    assert dsn["From"] == "mailer-daemon@example.com"
    assert dsn["To"] == "alice@sender.example"
    assert dsn.get_content_type() == "multipart/report"
    assert dsn.get_param("report-type") == "delivery-status"
    text, status, headers = dsn.iter_parts()
    assert "Mailbox does not exist" in text.get_content()
    assert status.get_content_type() == "message/delivery-status"
    report = status.as_string()
    assert "Final-Recipient: rfc822; gone@example.com" in report
    assert "b@example.com" not in report
    assert "Status: 5.1.1" in report
    assert "Action: failed" in report
    assert headers.get_content_type() == "text/rfc822-headers"
    assert sent.message_id.encode() in headers.get_payload(decode=True)


def test_dsn_mode_always_answers_250(write_config, serve, tmp_path):
    """bounce_mode dsn is SES's own behaviour: 250, then a DSN."""
    config = write_config(
        {
            "server": {"bounce_mode": "dsn"},
            "rule_set": rule_set({"name": "b", "actions": [BOUNCE]}),
        }
    )
    server = serve(config)

    sent = send(server.port, make_message())

    assert sent.code == 250
    assert len(list((tmp_path / "data" / "outbox").iterdir())) == 1
    action = read_trace(tmp_path / "data", sent.message_id)["rules"][0]["actions"][0]
    assert action["outcome"] == "dsn"


def test_no_dsn_to_a_null_sender(write_config, serve, tmp_path):
    """A bounce of a bounce (MAIL FROM:<>) is not mailed."""
    config = write_config(
        {
            "server": {"bounce_mode": "dsn"},
            "rule_set": rule_set({"name": "b", "actions": [BOUNCE]}),
        }
    )
    server = serve(config)

    sent = send(server.port, make_message(), mail_from="")

    assert sent.code == 250
    assert list((tmp_path / "data" / "outbox").iterdir()) == []


def test_added_header_is_seen_by_later_actions_and_rules(write_config, serve, tmp_path):
    """An added header tops later objects and events, in its rule and later ones."""
    config = write_config(
        {
            "rule_set": rule_set(
                {
                    "name": "tag",
                    "actions": [
                        store("before"),
                        {
                            "add_header": {
                                "header_name": "X-Rule",
                                "header_value": "tag; v=1",
                            }
                        },
                        store("after"),
                    ],
                },
                rule("later", call("handlers:record", "RequestResponse")),
            )
        }
    )
    server = serve(config)

    sent = send(server.port, make_message())
    buckets = tmp_path / "data" / "s3"
    before = (buckets / "before" / sent.message_id).read_bytes()
    after = (buckets / "after" / sent.message_id).read_bytes()
    [called] = read_calls(tmp_path)

    assert after == b"X-Rule: tag; v=1\r\n" + before
    headers = called["event"]["Records"][0]["ses"]["mail"]["headers"]
    assert headers[0] == {"name": "X-Rule", "value": "tag; v=1"}


def test_stop_ends_the_rule_set(write_config, serve, tmp_path):
    """Nothing after a Stop action runs, in its rule or later ones."""
    config = write_config(
        {
            "rule_set": rule_set(
                {
                    "name": "one",
                    "actions": [
                        {"stop": {"scope": "RuleSet"}},
                        store("one"),
                    ],
                },
                rule("two", store("two")),
            )
        }
    )
    server = serve(config)

    sent = send(server.port, make_message())
    trace = read_trace(tmp_path / "data", sent.message_id)

    assert sent.code == 250
    assert stored_messages(tmp_path / "data" / "s3" / "one") == []
    assert stored_messages(tmp_path / "data" / "s3" / "two") == []
    one, two = trace["rules"]
    assert (one["status"], two["status"]) == ("matched", "not reached")
    assert [a["outcome"] for a in one["actions"]] == ["ok", "not reached"]
    assert [a["outcome"] for a in two["actions"]] == ["not run"]


@pytest.mark.parametrize(
    ("prefix", "key_start"),
    [("", ""), ("mail/", "mail/"), ("inbound", "inbound/"), ("a/b/", "a/b/")],
)
def test_object_key_joins_prefix_and_message_id(
    write_config, serve, tmp_path, prefix, key_start
):
    """The key is prefix + messageId, with a slash added when the prefix lacks one."""
    config = write_config(
        {
            "rule_set": rule_set(
                {
                    "name": "s",
                    "actions": [
                        {"s3": {"bucket_name": "inbound", "object_key_prefix": prefix}}
                    ],
                }
            )
        }
    )
    server = serve(config)

    sent = send(server.port, make_message())
    action = read_trace(tmp_path / "data", sent.message_id)["rules"][0]["actions"][0]

    assert action["detail"]["object_key"] == key_start + sent.message_id
    assert (
        tmp_path / "data" / "s3" / "inbound" / (key_start + sent.message_id)
    ).is_file()


def test_hostile_prefix_stays_inside_the_bucket(write_config, serve, tmp_path):
    """A prefix with .. segments or a leading slash cannot leave the bucket folder."""
    config = write_config(
        {
            "rule_set": rule_set(
                {
                    "name": "s",
                    "actions": [
                        {
                            "s3": {
                                "bucket_name": "inbound",
                                "object_key_prefix": "/../../escape/",
                            }
                        }
                    ],
                }
            )
        }
    )
    server = serve(config)

    sent = send(server.port, make_message())
    action = read_trace(tmp_path / "data", sent.message_id)["rules"][0]["actions"][0]

    assert action["detail"]["object_key"] == "/../../escape/" + sent.message_id
    stored = [p for p in (tmp_path / "data").rglob(sent.message_id) if p.is_file()]
    assert len(stored) == 1
    assert stored[0].is_relative_to(tmp_path / "data" / "s3" / "inbound")
    assert not (tmp_path / "escape").exists()


def test_dsn_carries_8bit_headers(write_config, serve, tmp_path):
    """Headers that are not ASCII, or not even UTF-8, still make a DSN."""
    config = write_config(
        {"server": {"bounce_mode": "dsn"}, "rule_set": rule_set(rule("b", BOUNCE))}
    )
    server = serve(config)
    message = make_message(subject="caf\xe9").replace(
        b"caf\xc3\xa9", b"caf\xe9 \xc3\xa9"
    )

    sent = send(server.port, message)
    [dsn_path] = (tmp_path / "data" / "outbox").iterdir()
    dsn = email.message_from_bytes(dsn_path.read_bytes(), policy=email.policy.default)

    assert sent.code == 250
    headers = list(dsn.iter_parts())[2]
    assert b"Subject: caf\xe9 \xc3\xa9\r\n" in headers.get_payload(decode=True)


def test_setup_notification_is_written_under_each_prefix(write_config, serve, tmp_path):
    """Loading the rule set writes AMAZON_SES_SETUP_NOTIFICATION per S3 action."""
    config = write_config(
        {
            "rule_set": rule_set(
                rule("a", store("inbound", object_key_prefix="emails")),
                rule("b", store("inbound"), store("other", object_key_prefix="x/")),
            )
        }
    )

    serve(config)

    buckets = tmp_path / "data" / "s3"
    assert (buckets / "inbound" / "emails" / "AMAZON_SES_SETUP_NOTIFICATION").is_file()
    assert (buckets / "inbound" / "AMAZON_SES_SETUP_NOTIFICATION").is_file()
    assert (buckets / "other" / "x" / "AMAZON_SES_SETUP_NOTIFICATION").is_file()


WORKMAIL = {
    "workmail": {
        "organization_arn": "arn:aws:workmail:us-east-1:123456789012:"
        "organization/m-68755160c4cb4e29a2b2f8fb58f359d7"
    }
}
CONNECT = {
    "connect": {
        "instance_arn": "arn:aws:connect:us-east-1:123456789012:"
        "instance/6e5fa1ab-3e2b-4c1a-9d3e-4a5b6c7d8e9f",
        "iam_role_arn": "arn:aws:iam::123456789012:role/ses-connect",
    }
}


def test_workmail_and_connect_are_traced_as_not_emulated(write_config, serve, tmp_path):
    """WorkMail and Connect actions load, are traced, and the rule goes on."""
    config = write_config(
        {"rule_set": rule_set(rule("r", WORKMAIL, CONNECT, store("inbound")))}
    )
    server = serve(config)

    sent = send(server.port, make_message())
    actions = read_trace(tmp_path / "data", sent.message_id)["rules"][0]["actions"]

    assert [(a["type"], a["outcome"]) for a in actions] == [
        ("WorkMail", "not emulated"),
        ("Connect", "not emulated"),
        ("S3", "ok"),
    ]
