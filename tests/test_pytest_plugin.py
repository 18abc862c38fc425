"""The pytest plugin, used the way a project's own test suite uses it.

Each test writes a small test suite with pytester and runs it in a fresh
pytest process, where the plugin comes from the installed entry point.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

HANDLERS = """
import time

def store_subject(event, context):
    return {"disposition": "CONTINUE"}

def slow_audit(event, context):
    time.sleep(1.0)
"""

MESSAGE = """
MESSAGE = (
    b"From: Alice <alice@sender.example>\\r\\n"
    b"To: support@example.com\\r\\n"
    b"Subject: Order 42\\r\\n"
    b"Date: Thu, 03 Dec 2026 10:00:00 +0000\\r\\n"
    b"Message-ID: <order-42@sender.example>\\r\\n"
    b"\\r\\n"
    b"Where is my order?\\r\\n"
)
"""


def outcome(pytester: pytest.Pytester, passed: int) -> None:
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=passed)


def test_default_config_stores_every_message(pytester):
    """With no sesrx_config, every message lands in the bucket inbound."""
    pytester.makepyfile(
        MESSAGE
        + """
def test_store(sesrx_server):
    reply = sesrx_server.send(MESSAGE)
    assert reply.code == 250
    (message,) = sesrx_server.wait_for("support@example.com")
    assert message.id == reply.message_id
    assert message.subject == "Order 42"
    assert message.rules == ("store-everything",)

    objects = sesrx_server.objects("inbound")
    assert list(objects) == [reply.message_id]
    assert objects[reply.message_id].endswith(MESSAGE)
    assert b"X-SES-Spam-Verdict: PASS" in objects[reply.message_id]
    assert message.raw == objects[reply.message_id]
    assert "AMAZON_SES_SETUP_NOTIFICATION" in sesrx_server.objects(
        "inbound", setup_notifications=True
    )
    assert message.trace["verdicts"]["dkim"] == "GRAY"


def test_each_test_gets_a_fresh_server(sesrx_server):
    assert sesrx_server.messages() == []
    assert sesrx_server.objects("inbound") == {}
"""
    )
    outcome(pytester, passed=2)


def test_a_module_overrides_the_config_with_a_dict(pytester):
    """A dict config names handlers beside the tests; Event calls are waited for."""
    pytester.makepyfile(handlers=HANDLERS)
    pytester.makepyfile(
        MESSAGE
        + """
import time
import pytest


@pytest.fixture
def sesrx_config():
    return {
        "functions": {
            "subject": "handlers:store_subject",
            "audit": "handlers:slow_audit",
        },
        "rule_set": {
            "name": "support",
            "rules": [
                {
                    "name": "support",
                    "recipients": ["support@example.com"],
                    "actions": [
                        {"s3": {"bucket_name": "mail", "object_key_prefix": "support"}},
                        {"lambda": {"function_arn": "subject",
                                    "invocation_type": "RequestResponse"}},
                        {"lambda": {"function_arn": "audit"}},
                    ],
                },
            ],
        },
    }


def test_wait_includes_the_background_handler(sesrx_server):
    started = time.monotonic()
    reply = sesrx_server.send(MESSAGE)
    (message,) = sesrx_server.wait_for("support@example.com", timeout=20)
    assert time.monotonic() - started >= 1.0

    calls = sesrx_server.invocations()
    assert [(c["function_name"], c["invocation_type"], c["status"]) for c in calls] == [
        ("subject", "RequestResponse", "ok"),
        ("audit", "Event", "ok"),
    ]
    event = message.event("subject")
    record = event["Records"][0]["ses"]
    assert record["mail"]["messageId"] == reply.message_id
    assert record["mail"]["commonHeaders"]["subject"] == "Order 42"
    assert record["receipt"]["action"]["functionArn"].endswith(":function:subject")
    assert list(sesrx_server.objects("mail", prefix="support/")) == [
        f"support/{reply.message_id}"
    ]


def test_refused_recipients_are_returned_not_raised(sesrx_server):
    reply = sesrx_server.send(MESSAGE, to=["nobody@elsewhere.example"])
    assert reply.code == 550
    assert "nobody@elsewhere.example" in reply.refused


def test_wait_for_names_what_arrived_when_time_runs_out(sesrx_server):
    sesrx_server.send(MESSAGE)
    with pytest.raises(TimeoutError, match=r"for 2 message.*1 done"):
        sesrx_server.wait_for("support@example.com", count=2, timeout=2)


def test_reset_empties_everything(sesrx_server):
    sesrx_server.send(MESSAGE)
    sesrx_server.wait_for("support@example.com", timeout=20)
    sesrx_server.reset()
    assert sesrx_server.messages() == []
    assert sesrx_server.objects("mail") == {}
    assert sesrx_server.invocations() == []
"""
    )
    outcome(pytester, passed=4)


def test_a_yaml_file_beside_the_tests(pytester):
    """sesrx_config may return a path, relative to the test module."""
    pytester.makefile(
        ".yaml",
        sesrx="""
verified_domains: [example.com]
rule_set:
  name: from-file
  rules:
    - name: bounce-all
      actions:
        - bounce: {smtp_reply_code: "550", status_code: "5.1.1",
                   message: "No such user", sender: "mailer-daemon@example.com"}
""",
    )
    pytester.makepyfile(
        MESSAGE
        + """
import pytest


@pytest.fixture
def sesrx_config():
    return "sesrx.yaml"


def test_bounced(sesrx_server):
    reply = sesrx_server.send(MESSAGE)
    assert (reply.code, reply.text) == (550, "5.1.1 No such user")
    (message,) = sesrx_server.wait_for("support@example.com")
    assert message.reply == "550 5.1.1 No such user"
    assert message.rules == ("bounce-all",)
"""
    )
    outcome(pytester, passed=1)


def test_dkim_sign_gives_pass_and_a_changed_body_fail(pytester):
    """The signing helper publishes its key in the server's zone."""
    pytester.makepyfile(
        MESSAGE
        + """
def test_pass_and_fail(sesrx_server):
    signed = sesrx_server.dkim_sign(MESSAGE, "sender.example")
    sesrx_server.send(signed)
    tampered = signed.replace(b"my order", b"my refund")
    sesrx_server.send(tampered)

    good, bad = sesrx_server.wait_for("support@example.com", count=2)
    assert good.verdicts["dkim"] == "PASS"
    assert good.verdicts["dmarc"] in ("PASS", "GRAY")
    assert bad.verdicts["dkim"] == "FAIL"
    assert good.trace["dkim_signatures"][0]["selector"] == "sesrx"
"""
    )
    outcome(pytester, passed=1)


def test_a_bad_config_fails_the_fixture_with_its_key_path(pytester):
    pytester.makepyfile(
        """
import pytest


@pytest.fixture
def sesrx_config():
    rule = {"name": "x", "actions": [{"s3": {}}]}
    return {"rule_set": {"name": "r", "rules": [rule]}}


def test_never_runs(sesrx_server):
    pass
"""
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        ["*rule_set.rules[[]0[]].actions[[]0[]].s3.bucket_name: required key*"]
    )


def test_readme_example_passes(pytester):
    """The plugin example in README runs as written."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Testing with pytest") :]
    blocks = re.findall(r"```python\n(.*?)```", section, re.DOTALL)
    assert blocks, "README's pytest section has no Python example"
    handler, test = blocks[0], blocks[1]
    pytester.makepyfile(handlers=handler, test_signup=test)
    outcome(pytester, passed=test.count("\ndef test_"))
