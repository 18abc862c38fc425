"""Lambda actions: the event and context handlers get, dispositions, output."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import pytest

from helpers import (
    Sent,
    call,
    make_message,
    read_calls,
    read_trace,
    rule,
    rule_set,
    send,
    store,
)

pytestmark = pytest.mark.e2e


def send_beside_a_slow_one(port: int, slow: str, fast: str) -> tuple[Sent, float]:
    """Send to ``slow`` on one thread, then to ``fast``; time the second."""
    sender = threading.Thread(
        target=send, args=(port, make_message()), kwargs={"rcpt_tos": [slow]}
    )
    sender.start()
    time.sleep(0.2)
    started = time.monotonic()
    sent = send(port, make_message(), rcpt_tos=[fast])
    elapsed = time.monotonic() - started
    sender.join()
    return sent, elapsed


ARN = "arn:aws:lambda:eu-west-1:000011112222:function:recorder"
STORE = store("inbound")


def test_handler_gets_the_ses_event_and_a_context(write_config, serve, tmp_path):
    """The event has one aws:ses record with mail and receipt; the context is AWS's."""
    config = write_config(
        {
            "aws": {"region": "eu-west-1", "account_id": "000011112222"},
            "functions": {"recorder": "handlers:record"},
            "rule_set": rule_set(rule("r1", call(ARN))),
        }
    )
    server = serve(config)
    message = make_message(
        to='"Doe, John" <john@example.com>, ann@example.com',
        extra=(("Cc", "Carl <carl@example.com>"), ("Reply-To", "r@sender.example")),
    )

    sent = send(
        server.port, message, rcpt_tos=["john@example.com", "hidden@example.com"]
    )
    [called] = read_calls(tmp_path)

    assert called["context"]["function_name"] == "recorder"
    assert called["context"]["invoked_function_arn"] == ARN
    assert called["context"]["log_group_name"] == "/aws/lambda/recorder"
    assert 0 < called["context"]["remaining"] <= 30_000
    [record] = called["event"]["Records"]
    assert record["eventSource"] == "aws:ses"
    assert record["eventVersion"] == "1.0"
    mail, receipt = record["ses"]["mail"], record["ses"]["receipt"]
    assert mail["messageId"] == sent.message_id
    assert mail["source"] == "alice@sender.example"
    assert mail["destination"] == [
        "john@example.com",
        "ann@example.com",
        "carl@example.com",
    ]
    assert mail["commonHeaders"]["to"] == [
        '"Doe, John" <john@example.com>',
        "ann@example.com",
    ]
    assert mail["commonHeaders"]["replyTo"] == ["r@sender.example"]
    assert mail["commonHeaders"]["returnPath"] == "alice@sender.example"
    assert list(mail["commonHeaders"]) == [
        "returnPath",
        "from",
        "replyTo",
        "date",
        "to",
        "cc",
        "messageId",
        "subject",
    ]
    assert [h["name"] for h in mail["headers"][:9]] == [
        "Return-Path",
        "Received",
        "X-SES-Spam-Verdict",
        "X-SES-Virus-Verdict",
        "Received-SPF",
        "Authentication-Results",
        "X-SES-RECEIPT",
        "X-SES-DKIM-SIGNATURE",
        "From",
    ]
    assert receipt["recipients"] == ["john@example.com", "hidden@example.com"]
    assert receipt["action"] == {
        "type": "Lambda",
        "functionArn": ARN,
        "invocationType": "RequestResponse",
    }
    assert receipt["dkimVerdict"] == {"status": "GRAY"}
    assert isinstance(receipt["processingTimeMillis"], int)
    assert receipt["processingTimeMillis"] >= 1
    assert receipt["timestamp"] == mail["timestamp"]
    assert mail["timestamp"].endswith("Z")


@pytest.mark.parametrize(
    ("handler", "later_actions_ran", "later_rules_ran"),
    [
        ("record", True, True),
        ("stop_rule", False, True),
        ("stop_rule_set", False, False),
        ("async_stop", False, False),
        ("raises", True, True),
        ("exits", True, True),
        ("unserialisable", True, True),
    ],
)
def test_request_response_disposition(
    write_config, serve, tmp_path, handler, later_actions_ran, later_rules_ran
):
    """STOP_RULE skips the rule's rest, STOP_RULE_SET everything; errors continue."""
    config = write_config(
        {
            "rule_set": rule_set(
                rule("first", call(f"handlers:{handler}"), store("first-rule")),
                rule("second", store("second-rule")),
            )
        }
    )
    server = serve(config)

    sent = send(server.port, make_message())
    buckets = tmp_path / "data" / "s3"

    assert sent.code == 250
    assert (buckets / "first-rule" / sent.message_id).exists() is later_actions_ran
    assert (buckets / "second-rule" / sent.message_id).exists() is later_rules_ran
    trace = read_trace(tmp_path / "data", sent.message_id)
    outcome = trace["rules"][0]["actions"][0]["outcome"]
    assert outcome == ("ok" if "stop" in handler or handler == "record" else "error")


def test_handler_error_is_logged_with_its_traceback(write_config, serve, tmp_path):
    """A handler that raises has its traceback in its log, and the trace says why."""
    config = write_config(
        {
            "functions": {"broken": "handlers:raises"},
            "rule_set": rule_set(rule("r", call("broken"))),
        }
    )
    server = serve(config)

    sent = send(server.port, make_message())
    log_text = (tmp_path / "data" / "logs" / "broken.log").read_text()
    action = read_trace(tmp_path / "data", sent.message_id)["rules"][0]["actions"][0]

    assert "RuntimeError: handler failed on purpose" in log_text
    assert "Traceback (most recent call last)" in log_text
    first_frame = log_text.split("Traceback (most recent call last):\n", 1)[1]
    assert first_frame.lstrip().startswith(f'File "{tmp_path / "handlers.py"}"')
    assert action["error"] == "RuntimeError: handler failed on purpose"
    assert action["disposition"] == "CONTINUE"


def test_timeout_counts_as_continue(write_config, serve, tmp_path):
    """A handler past lambda_timeout is abandoned and processing goes on."""
    config = write_config(
        {
            "server": {"lambda_timeout": 0.3},
            "rule_set": rule_set(rule("r", call("handlers:slow"), STORE)),
        }
    )
    server = serve(config)

    started = time.monotonic()
    sent = send(server.port, make_message())
    elapsed = time.monotonic() - started

    assert elapsed < 1.4
    assert (tmp_path / "data" / "s3" / "inbound" / sent.message_id).exists()
    action = read_trace(tmp_path / "data", sent.message_id)["rules"][0]["actions"][0]
    assert action["outcome"] == "timeout"
    assert action["error"] == "Task timed out after 0.30 seconds"


def test_event_invocation_runs_in_the_background(write_config, serve, tmp_path):
    """An Event call does not delay the reply and its disposition is ignored."""
    config = write_config(
        {"rule_set": rule_set(rule("r", call("handlers:slow", "Event"), STORE))}
    )
    server = serve(config)

    started = time.monotonic()
    sent = send(server.port, make_message())
    elapsed = time.monotonic() - started

    assert elapsed < 1.0
    assert (tmp_path / "data" / "s3" / "inbound" / sent.message_id).exists()
    assert read_calls(tmp_path) == []
    assert server.wait_idle(10)
    assert [c["name"] for c in read_calls(tmp_path)] == ["slow"]
    action = read_trace(tmp_path / "data", sent.message_id)["rules"][0]["actions"][0]
    assert action["outcome"] == "ok"
    assert action["disposition"] == "CONTINUE"


def test_blocking_handler_does_not_stall_other_sessions(write_config, serve, tmp_path):
    """While one session waits on a slow handler, another is served at once."""
    config = write_config(
        {
            "rule_set": rule_set(
                rule("slow", call("handlers:slow"), recipients=["slow@example.com"]),
                {
                    "name": "fast",
                    "recipients": ["fast@example.com"],
                    "actions": [STORE],
                },
            )
        }
    )
    server = serve(config)

    sent, elapsed = send_beside_a_slow_one(
        server.port, "slow@example.com", "fast@example.com"
    )

    assert sent.code == 250
    assert elapsed < 1.0


def test_printed_and_logged_output_goes_to_the_function_log(
    write_config, serve, tmp_path
):
    """print() and logging in a handler land in its log file, by request id."""
    config = write_config(
        {
            "functions": {"chatty": "handlers:chatty"},
            "rule_set": rule_set(rule("r", call("chatty"))),
        }
    )
    server = serve(config)

    send(server.port, make_message())
    [called] = read_calls(tmp_path)
    request_id = called["context"]["aws_request_id"]
    lines = (tmp_path / "data" / "logs" / "chatty.log").read_text().splitlines()

    texts = [
        line.split("\t", 2)[2] for line in lines if line.split("\t")[1] == request_id
    ]
    assert texts[0] == f"START RequestId: {request_id} Version: $LATEST"
    assert "" not in texts
    assert texts[-3] == "tail without a line break"
    assert "printed line one" in texts
    assert "printed line two" in texts
    assert "[WARNING]\tlogged warning 42" in "\n".join(texts)
    assert texts[-2] == f"END RequestId: {request_id}"
    assert texts[-1].startswith(f"REPORT RequestId: {request_id}")


def test_each_handler_gets_its_own_copy_of_the_event(write_config, serve, tmp_path):
    """Two Lambda actions of one rule see the same event, independently built."""
    config = write_config(
        {
            "rule_set": rule_set(
                {
                    "name": "r",
                    "actions": [
                        call("handlers:record"),
                        {
                            "add_header": {
                                "header_name": "X-Seen",
                                "header_value": "yes",
                            }
                        },
                        call("handlers:record"),
                    ],
                }
            )
        }
    )
    server = serve(config)

    send(server.port, make_message())
    first, second = read_calls(tmp_path)

    first_names = [
        h["name"] for h in first["event"]["Records"][0]["ses"]["mail"]["headers"]
    ]
    second_names = [
        h["name"] for h in second["event"]["Records"][0]["ses"]["mail"]["headers"]
    ]
    assert "X-Seen" not in first_names
    assert second_names[0] == "X-Seen"
    assert json.dumps(first["event"]) != json.dumps(second["event"])


def test_unknown_disposition_continues_with_a_note(write_config, serve, tmp_path):
    """A disposition SES does not know counts as CONTINUE, and the trace says so."""
    config = write_config(
        {"rule_set": rule_set(rule("r", call("handlers:typo"), STORE))}
    )
    server = serve(config)

    sent = send(server.port, make_message())
    lambda_action, s3_action = read_trace(tmp_path / "data", sent.message_id)["rules"][
        0
    ]["actions"]

    assert lambda_action["disposition"] == "CONTINUE"
    assert (
        lambda_action["detail"]["note"] == "unknown disposition 'STOP' read as CONTINUE"
    )
    assert s3_action["outcome"] == "ok"


def test_huge_errors_and_dispositions_are_logged_in_part(
    write_config, serve, tmp_path, caplog
):
    """A 1 MB exception text or disposition fills neither sesrx's log nor the
    trace; the function's log keeps the whole traceback."""
    (tmp_path / "huge.py").write_text(
        "def raises(event, context):\n"
        "    raise ValueError('x' * 1_000_000)\n"
        "def answers(event, context):\n"
        "    return {'disposition': 'y' * 1_000_000}\n"
    )
    config = write_config(
        {
            "functions": {"raises": "huge:raises", "answers": "huge:answers"},
            "rule_set": rule_set(rule("r", call("raises"), call("answers"))),
        }
    )
    server = serve(config)
    caplog.set_level("WARNING", logger="sesrx.lambda")

    sent = send(server.port, make_message())

    assert sent.code == 250
    assert 0 < len(caplog.text) < 40_000
    assert "more characters in the function's log" in caplog.text
    trace = read_trace(tmp_path / "data", sent.message_id)
    note = trace["rules"][0]["actions"][1]["detail"]["note"]
    assert note.startswith("unknown disposition 'yyy")
    assert len(note) < 200
    function_log = (tmp_path / "data" / "logs" / "raises.log").read_text()
    assert function_log.count("x") >= 1_000_000


def test_blocking_async_handler_does_not_stall_others(write_config, serve, tmp_path):
    """An async handler that blocks its thread holds up no other session."""
    config = write_config(
        {
            "server": {"lambda_timeout": 0.5},
            "rule_set": rule_set(
                rule(
                    "slow", call("handlers:async_blocks"), recipients=["s@example.com"]
                ),
                rule("fast", STORE, recipients=["f@example.com"]),
            ),
        }
    )
    server = serve(config)

    sent, elapsed = send_beside_a_slow_one(
        server.port, "s@example.com", "f@example.com"
    )

    assert sent.code == 250
    assert elapsed < 0.5
    traces = [
        read_trace(tmp_path / "data", p.stem)
        for p in (tmp_path / "data" / "traces").iterdir()
    ]
    [slow_trace] = [t for t in traces if t["rules"][0]["status"] == "matched"]
    assert slow_trace["rules"][0]["actions"][0]["outcome"] == "timeout"


def test_handler_errors_are_named_in_the_trace(write_config, serve, tmp_path):
    """sys.exit() and a return value Lambda cannot serialise are errors, not crashes."""
    config = write_config(
        {
            "rule_set": rule_set(
                rule(
                    "a", call("handlers:exits"), call("handlers:unserialisable"), STORE
                )
            )
        }
    )
    server = serve(config)

    sent = send(server.port, make_message())
    exits, unserialisable, stored = read_trace(tmp_path / "data", sent.message_id)[
        "rules"
    ][0]["actions"]

    assert exits["error"] == "HandlerExitError: handler raised SystemExit(3)"
    assert unserialisable["error"].startswith(
        "MarshalError: Unable to marshal response"
    )
    assert stored["outcome"] == "ok"
    assert send(server.port, make_message()).code == 250


def test_unwritable_function_log_does_not_fail_the_message(
    write_config, serve, tmp_path
):
    """When logs/ cannot be written, handlers still run and the message is stored."""
    config = write_config(
        {"rule_set": rule_set(rule("r", call("handlers:chatty"), STORE))}
    )
    server = serve(config)
    logs = tmp_path / "data" / "logs"
    logs.rmdir()
    logs.write_text("a file where the folder goes")

    sent = send(server.port, make_message())
    action = read_trace(tmp_path / "data", sent.message_id)["rules"][0]["actions"][0]

    assert sent.code == 250
    assert action["outcome"] == "ok"
    assert [c["name"] for c in read_calls(tmp_path)] == ["chatty"]


@pytest.mark.parametrize("kind", ["RequestResponse", "Event"])
def test_exceptions_with_broken_text_are_errors_like_others(
    write_config, serve, tmp_path, kind
):
    """Exceptions whose text cannot be printed are errors like any other."""
    config = write_config(
        {
            "rule_set": rule_set(
                rule(
                    "r",
                    call("handlers:bad_text", kind),
                    call("handlers:unprintable", kind),
                    STORE,
                )
            )
        }
    )
    server = serve(config)

    sent = send(server.port, make_message())
    assert server.wait_idle()
    bad_text, unprintable, stored = read_trace(tmp_path / "data", sent.message_id)[
        "rules"
    ][0]["actions"]

    assert sent.code == 250
    assert bad_text["error"] == "ValueError: bad \\udcff text"
    assert (
        unprintable["error"] == "_Unprintable: (the exception's text could not be read)"
    )
    assert stored["outcome"] == "ok"


def test_many_background_calls_share_trace_writes(write_config, serve, tmp_path):
    """Twenty Event calls finishing together do not rewrite the trace twenty times."""
    quick = call("handlers:record", "Event")
    config = write_config(
        {"rule_set": rule_set(rule("a", *[quick] * 10), rule("b", *[quick] * 10))}
    )
    server = serve(config)
    data_dir = server.server.data_dir
    writes = []
    real_write = data_dir.write_json

    async def counting_write(path, document):
        writes.append(path)
        await real_write(path, document)

    data_dir.write_json = counting_write

    sent = send(server.port, make_message())
    assert server.wait_idle()
    server.call(asyncio.sleep(0.2), 5)  # let the last coalesced write land
    trace = read_trace(tmp_path / "data", sent.message_id)

    outcomes = [a["outcome"] for r in trace["rules"] for a in r["actions"]]
    assert outcomes == ["ok"] * 20
    assert len(writes) < 20


def test_headers_past_10_kb_are_cut_and_flagged(write_config, serve, tmp_path):
    """mail.headers stops at 10 KB of headers and says so; commonHeaders does not."""
    config = write_config({"rule_set": rule_set(rule("r", call("handlers:record")))})
    server = serve(config)
    filler = tuple(("X-Filler", "y" * 200) for _ in range(60))
    extra = (*filler, ("Reply-To", "late@sender.example"))

    send(server.port, make_message(extra=extra))
    small = send(server.port, make_message())
    big_mail, small_mail = [
        c["event"]["Records"][0]["ses"]["mail"] for c in read_calls(tmp_path)
    ]

    assert big_mail["headersTruncated"] is True
    size = sum(len(h["name"]) + len(h["value"]) + 4 for h in big_mail["headers"])
    assert 9 * 1024 < size <= 10 * 1024
    assert big_mail["commonHeaders"]["replyTo"] == ["late@sender.example"]
    assert small_mail["headersTruncated"] is False
    assert small.code == 250


def test_failing_event_call_is_tried_three_times(write_config, serve, tmp_path):
    """A raising Event handler is retried twice, as Lambda does, each attempt traced."""
    config = write_config(
        {"rule_set": rule_set(rule("r", call("handlers:raises", "Event")))}
    )
    server = serve(config)

    sent = send(server.port, make_message())
    assert server.wait_idle()
    action = read_trace(tmp_path / "data", sent.message_id)["rules"][0]["actions"][0]
    calls = read_calls(tmp_path)

    assert len(calls) == 3
    assert len({c["context"]["aws_request_id"] for c in calls}) == 1
    assert action["outcome"] == "error"
    assert [a["status"] for a in action["detail"]["attempts"]] == ["error"] * 3
