"""The HTTP API, over real HTTP and real SMTP on loopback ports."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import pytest

from helpers import (
    BOUNCE,
    call,
    make_message,
    read_calls,
    rule,
    rule_set,
    send,
    store,
    stored_messages,
)

pytestmark = pytest.mark.e2e


STOP = {"stop": {"scope": "RuleSet"}}


def request(
    server: Any, path: str, method: str = "GET", timeout: float = 30
) -> tuple[int, Any, dict[str, str]]:
    """Call the API; return status, body (JSON where it is JSON) and headers."""
    url = f"http://127.0.0.1:{server.server.api_port}{path}"
    try:
        with urllib.request.urlopen(
            urllib.request.Request(url, method=method), timeout=timeout
        ) as response:
            status, body, headers = response.status, response.read(), response.headers
    except urllib.error.HTTPError as exc:
        status, body, headers = exc.code, exc.read(), exc.headers
    if headers.get("Content-Type", "").startswith("application/json"):
        body = json.loads(body)
    return status, body, dict(headers)


@pytest.fixture
def server(write_config, serve):
    path = write_config(
        {
            "functions": {"record": "handlers:record", "slow": "handlers:slow"},
            "rule_set": rule_set(
                rule("gone", BOUNCE, STOP, recipients=["gone@example.com"]),
                rule(
                    "billing",
                    store("inbound", object_key_prefix="billing"),
                    recipients=["billing@example.com"],
                ),
                rule("audit", call("record"), recipients=["audit@example.com"]),
                rule(
                    "background",
                    call("slow", "Event"),
                    recipients=["later@example.com"],
                ),
                rule("all", store("inbound")),
            ),
        }
    )
    return serve(path)


def test_health_and_readiness(server):
    """healthz says alive; readyz names the SMTP address and the rule set."""
    status, body, _ = request(server, "/healthz")
    assert (status, body["status"]) == (200, "ok")

    status, body, _ = request(server, "/readyz")
    assert status == 200
    assert body == {
        "status": "ready",
        "smtp": f"127.0.0.1:{server.port}",
        "rule_set": "test-rules",
        "rules": 5,
    }


def test_messages_are_listed_newest_first_and_filtered(server):
    """Filters on recipient, sender, rule and time; pages with limit/offset."""
    first = send(server.port, make_message(subject="one"), ["bob@example.com"])
    cut = datetime.now(UTC).isoformat()
    time.sleep(0.01)
    second = send(
        server.port,
        make_message(subject="=?utf-8?q?caf=C3=A9?="),
        ["billing@example.com"],
        mail_from="carol@other.example",
    )

    status, body, _ = request(server, "/api/messages")
    assert status == 200
    assert [m["id"] for m in body["messages"]] == [
        second.message_id,
        first.message_id,
    ]
    newest = body["messages"][0]
    assert newest["subject"] == "café"
    assert newest["mail_from"] == "carol@other.example"
    assert newest["recipients"] == ["billing@example.com"]
    assert newest["rules"] == ["billing", "all"]
    assert newest["reply"] == f"250 OK {second.message_id}"
    assert newest["done"] is True

    def ids(query: str) -> list[str]:
        status, body, _ = request(server, f"/api/messages?{query}")
        assert status == 200, body
        return [m["id"] for m in body["messages"]]

    assert ids("recipient=BOB@example.com") == [first.message_id]
    assert ids("recipient=example.com") == [second.message_id, first.message_id]
    assert ids("sender=other.example") == [second.message_id]
    assert ids("rule=billing") == [second.message_id]
    assert ids(f"since={cut.replace('+00:00', 'Z')}") == [second.message_id]
    assert ids("limit=1&offset=1") == [first.message_id]
    assert ids("recipient=nobody@example.com") == []


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("limit=0", "limit"),
        ("limit=abc", "limit"),
        ("offset=-1", "offset"),
        ("since=yesterday", "since"),
        ("since=2026-12-03T10:00:00", "since"),
    ],
)
def test_bad_parameters_are_named(server, query, named):
    """A parameter that cannot be used gives 400 and names it."""
    status, body, _ = request(server, f"/api/messages?{query}")
    assert status == 400
    assert body["error"].startswith(f"{named}: ")


def test_one_message_has_its_trace_and_stored_bytes(server, tmp_path):
    """The detail shows rules, actions and verdicts; raw is the S3 object."""
    sent = send(server.port, make_message(), ["billing@example.com"])

    status, body, _ = request(server, f"/api/messages/{sent.message_id}")
    assert status == 200
    trace = body["trace"]
    assert trace["verdicts"]["dkim"] == "GRAY"
    statuses = {r["name"]: r["status"] for r in trace["rules"]}
    assert statuses == {
        "gone": "skipped",
        "billing": "matched",
        "audit": "skipped",
        "background": "skipped",
        "all": "matched",
    }
    billing = trace["rules"][1]["actions"][0]
    assert billing["outcome"] == "ok"
    assert billing["detail"]["object_key"] == f"billing/{sent.message_id}"

    status, raw, headers = request(server, f"/api/messages/{sent.message_id}/raw")
    assert status == 200
    assert headers["Content-Type"] == "message/rfc822"
    assert headers["X-Sesrx-Object"] == f"s3://inbound/billing/{sent.message_id}"
    stored = tmp_path / "data" / "s3" / "inbound" / "billing" / sent.message_id
    assert raw == stored.read_bytes()


def test_raw_of_a_message_no_action_stored(server):
    """A bounced message has no object; raw gives the bytes received."""
    message = make_message(subject="bounced")
    sent = send(server.port, message, ["gone@example.com"])
    assert sent.code == 550

    listed = request(server, "/api/messages?recipient=gone@example.com")[1]
    message_id = listed["messages"][0]["id"]
    status, raw, headers = request(server, f"/api/messages/{message_id}/raw")
    assert status == 200
    assert headers["X-Sesrx-Object"] == "received"
    assert raw == message


def test_unknown_and_malformed_ids_are_404(server):
    for path in ("/api/messages/" + "a" * 40, "/api/messages/..%2F..%2Fetc"):
        status, body, _ = request(server, path)
        assert status == 404
        assert "no message" in body["error"]


def test_event_is_what_the_handler_was_given(server, tmp_path):
    """/event returns the Lambda event exactly as the handler received it."""
    sent = send(server.port, make_message(), ["audit@example.com"])

    status, event, _ = request(server, f"/api/messages/{sent.message_id}/event")
    assert status == 200
    assert event == read_calls(tmp_path)[0]["event"]
    assert event["Records"][0]["ses"]["mail"]["messageId"] == sent.message_id

    assert (
        request(server, f"/api/messages/{sent.message_id}/event?function=x")[0] == 404
    )
    other = send(server.port, make_message(), ["bob@example.com"])
    status, body, _ = request(server, f"/api/messages/{other.message_id}/event")
    assert status == 404
    assert "no Lambda action" in body["error"]


def test_wait_includes_background_handlers(server, tmp_path):
    """wait answers only once the Event handler (1.5 s) has finished."""
    results: dict[str, Any] = {}

    def waiting() -> None:
        results["reply"] = request(
            server, "/api/wait?recipient=later@example.com&count=1&timeout=20"
        )
        results["calls"] = len(read_calls(tmp_path))

    waiter = threading.Thread(target=waiting)
    waiter.start()
    time.sleep(0.2)  # the wait is open before the mail arrives
    sent = send(server.port, make_message(), ["later@example.com"])
    replied = time.monotonic()
    waiter.join(30)

    status, body, _ = results["reply"]
    assert status == 200
    assert [m["id"] for m in body["messages"]] == [sent.message_id]
    assert body["messages"][0]["done"] is True
    # The handler had written its call by the time wait answered, and its
    # outcome is in the trace.
    assert results["calls"] == 1
    assert time.monotonic() - replied >= 1.0
    trace = request(server, f"/api/messages/{sent.message_id}")[1]["trace"]
    assert trace["rules"][3]["actions"][0]["outcome"] == "ok"


def test_wait_times_out_with_408_and_what_it_has(server):
    sent = send(server.port, make_message(), ["bob@example.com"])
    started = time.monotonic()
    status, body, _ = request(
        server, "/api/wait?recipient=example.com&count=2&timeout=0.5"
    )
    assert time.monotonic() - started >= 0.5
    assert status == 408
    assert body["count"] == 1
    assert body["wanted"] == 2
    assert body["messages"][0]["id"] == sent.message_id


def test_wait_for_messages_already_there_answers_at_once(server):
    send(server.port, make_message(), ["bob@example.com"])
    started = time.monotonic()
    status, body, _ = request(server, "/api/wait?count=1&timeout=30")
    assert status == 200
    assert time.monotonic() - started < 5


def test_invocations_are_listed(server):
    sent = send(server.port, make_message(), ["audit@example.com"])
    status, body, _ = request(server, "/api/invocations")
    assert status == 200
    (invocation,) = body["invocations"]
    assert invocation["function_name"] == "record"
    assert invocation["invocation_type"] == "RequestResponse"
    assert invocation["message_id"] == sent.message_id
    assert invocation["status"] == "ok"
    assert invocation["duration_ms"] >= 0
    assert request(server, "/api/invocations?function=other")[1]["invocations"] == []

    later = send(server.port, make_message(), ["audit@example.com"])
    page = request(server, "/api/invocations?limit=1&offset=1")[1]
    assert (page["total"], page["offset"], page["limit"]) == (2, 1, 1)
    assert [i["message_id"] for i in page["invocations"]] == [sent.message_id]
    newest = request(server, "/api/invocations?limit=1")[1]["invocations"]
    assert [i["message_id"] for i in newest] == [later.message_id]


def test_outbox_lists_bounce_messages(write_config, serve):
    """In dsn mode each bounce is a message in the outbox."""
    path = write_config(
        {
            "server": {"bounce_mode": "dsn"},
            "rule_set": rule_set(rule("gone", BOUNCE)),
        }
    )
    server = serve(path)
    sent = send(server.port, make_message(), ["x@example.com"])

    status, body, _ = request(server, "/api/outbox")
    assert status == 200
    (item,) = body["messages"]
    assert item["message_id"] == sent.message_id
    status, dsn, _ = request(server, f"/api/outbox/{item['name']}")
    assert status == 200
    assert b"multipart/report" in dsn
    assert request(server, "/api/outbox/..%2Fsesrx.yaml")[0] == 404


def test_delete_clears_messages_and_files(server, tmp_path):
    """DELETE leaves an empty list and empty buckets, but the setup notice."""
    send(server.port, make_message(), ["audit@example.com"])
    send(server.port, make_message(), ["bob@example.com"])
    bucket = tmp_path / "data" / "s3" / "inbound"
    assert len(stored_messages(bucket)) == 2  # "all" stores both

    status, body, _ = request(server, "/api/messages", method="DELETE")
    assert status == 200
    assert body["deleted"] >= 3
    assert request(server, "/api/messages")[1]["total"] == 0
    assert request(server, "/api/invocations")[1]["invocations"] == []
    assert stored_messages(bucket) == []
    assert (bucket / "AMAZON_SES_SETUP_NOTIFICATION").is_file()
    assert list((tmp_path / "data" / "traces").iterdir()) == []

    after = send(server.port, make_message(), ["bob@example.com"])
    assert [m["id"] for m in request(server, "/api/messages")[1]["messages"]] == [
        after.message_id
    ]


def test_messages_of_an_earlier_run_are_listed(write_config, serve):
    path = write_config({"rule_set": rule_set(rule("all", store("inbound")))})
    first = serve(path)
    sent = send(first.port, make_message(subject="before"), ["bob@example.com"])
    first.stop()

    second = serve(path)
    status, body, _ = request(second, "/api/messages")
    assert [(m["id"], m["subject"]) for m in body["messages"]] == [
        (sent.message_id, "before")
    ]


def test_stream_sends_an_event_per_message(server):
    """The page's live feed: one server-sent event when a message is done."""
    url = f"http://127.0.0.1:{server.server.api_port}/api/stream"
    with urllib.request.urlopen(url, timeout=10) as stream:
        assert stream.headers["Content-Type"] == "text/event-stream"
        assert stream.readline() == b": connected\n"
        stream.readline()
        sent = send(server.port, make_message(), ["bob@example.com"])
        assert stream.readline() == b"event: message\n"
        data = stream.readline()
    assert data.startswith(b"data: ")
    assert json.loads(data[len(b"data: ") :])["id"] == sent.message_id


def test_api_can_be_turned_off(write_config, serve):
    path = write_config(
        {"server": {"api": False}, "rule_set": rule_set(rule("all", store("inbound")))}
    )
    server = serve(path)
    assert server.server.api_port is None
    assert send(server.port, make_message()).code == 250


def test_a_subject_that_decodes_to_a_lone_surrogate_is_stored(server, tmp_path):
    """=?utf-7?...?= can decode to half a character; the message still gets 250."""
    sent = send(
        server.port,
        make_message(subject="=?utf-7?q?+2AA-?="),
        ["billing@example.com"],
    )
    assert sent.code == 250

    status, body, _ = request(server, f"/api/messages/{sent.message_id}")
    assert status == 200
    assert body["subject"] == "\ufffd"
    assert body["trace"]["reply"] == f"250 OK {sent.message_id}"


def test_another_host_name_is_refused(server):
    """DNS rebinding: a request naming another host gets 421, localhost 200."""
    url = f"http://127.0.0.1:{server.server.api_port}/api/messages"
    for host, expected in (
        ("attacker.example", 421),
        (f"attacker.example:{server.server.api_port}", 421),
        (f"localhost:{server.server.api_port}", 200),
        (f"[::1]:{server.server.api_port}", 200),
        ("app.localhost", 200),
    ):
        request_ = urllib.request.Request(url, headers={"Host": host})
        try:
            with urllib.request.urlopen(request_, timeout=10) as response:
                status = response.status
        except urllib.error.HTTPError as exc:
            status = exc.code
        assert status == expected, host


def test_a_wait_whose_client_hangs_up_ends(server):
    """The server stops waiting for a client that has gone."""
    api = server.server.api
    with socket.create_connection(("127.0.0.1", server.server.api_port)) as client:
        client.sendall(
            b"GET /api/wait?recipient=nobody@example.com&timeout=600 HTTP/1.1\r\n"
            b"Host: localhost\r\n\r\n"
        )
        deadline = time.monotonic() + 5
        while api._waiting == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert api._waiting == 1
    deadline = time.monotonic() + 5
    while api._waiting and time.monotonic() < deadline:
        time.sleep(0.02)
    assert api._waiting == 0


def test_delete_during_deliveries_loses_no_acknowledged_message(server, tmp_path):
    """Senders never get 451 from a clear; what is acknowledged after it stays."""
    replies: list[tuple[int | None, str, float]] = []
    stop = threading.Event()

    def keep_sending() -> None:
        while not stop.is_set():
            sent = send(server.port, make_message(), ["billing@example.com"])
            replies.append(
                (sent.code, sent.data[1] if sent.data else "", time.monotonic())
            )

    senders = [threading.Thread(target=keep_sending) for _ in range(4)]
    for thread in senders:
        thread.start()
    cleared_at = 0.0
    for _ in range(30):
        time.sleep(0.05)
        assert request(server, "/api/messages", method="DELETE")[0] == 200
        cleared_at = time.monotonic()
    time.sleep(0.3)
    stop.set()
    for thread in senders:
        thread.join(30)

    assert {code for code, _, _ in replies} == {250}
    bucket = tmp_path / "data" / "s3" / "inbound" / "billing"
    after = [text.split()[-1] for code, text, at in replies if at > cleared_at + 0.01]
    assert after, "no message was acknowledged after the last clear"
    for message_id in after:
        assert (bucket / message_id).is_file()


def test_a_planted_trace_cannot_make_raw_read_outside_the_buckets(write_config, serve):
    """A trace naming bucket "/etc" is listed, but raw never reads /etc."""
    path = write_config({"rule_set": rule_set(rule("all", store("inbound")))})
    traces = path.parent / "data" / "traces"
    traces.mkdir(parents=True)
    planted = {
        "message_id": "p" * 40,
        "received_at": "2026-12-03T10:00:00.000+00:00",
        "envelope": {"mail_from": "a@b.example", "rcpt_tos": ["c@d.example"]},
        "rules": [
            {
                "name": "all",
                "status": "matched",
                "actions": [
                    {"type": "S3", "detail": {"bucket_name": bucket, "object_key": key}}
                    for bucket, key in (
                        ("/etc", "passwd"),
                        ("../../../../etc", "hosts"),
                    )
                ]
                + [{"type": "S3"}, "junk"],
            }
        ],
        "reply": "250 OK",
    }
    (traces / f"{'p' * 40}.json").write_text(json.dumps(planted))
    server = serve(path)

    listed = request(server, "/api/messages")[1]["messages"]
    assert [m["id"] for m in listed] == ["p" * 40]
    status, body, _ = request(server, f"/api/messages/{'p' * 40}/raw")
    assert status == 404
    assert request(server, f"/api/messages/{'p' * 40}/event")[0] == 404


def test_connections_past_the_limit_close_the_oldest_and_smtp_goes_on(server):
    """Clients that never finish a request hold at most MAX_CONNECTIONS; a new
    client is still answered, and the oldest idle one is closed."""
    from sesrx.api import MAX_CONNECTIONS

    port = server.server.api_port
    held = []
    try:
        for _ in range(MAX_CONNECTIONS + 5):
            client = socket.create_connection(("127.0.0.1", port), timeout=10)
            client.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n")
            held.append(client)
        time.sleep(0.3)
        assert request(server, "/readyz")[0] == 200
        assert send(server.port, make_message()).code == 250
        assert held[0].recv(100) == b""  # the oldest was closed
        # Connections accepted in one batch are counted once they start, so
        # the bound may be passed by at most one batch (asyncio takes up to
        # 100 at a time).
        connections = server.server.api._runner.server.connections
        assert sum(1 for c in connections if c.transport) <= MAX_CONNECTIONS + 100
    finally:
        for client in held:
            client.close()


def test_overlapping_clears_keep_deliveries_paused_until_the_last(server):
    """Two clears at once: messages wait until both have finished."""

    async def nested() -> tuple[bool, bool]:
        pipeline = server.server.pipeline
        async with pipeline.paused():
            async with pipeline.paused():
                pass
            inner_done = pipeline._open.is_set()
        return inner_done, pipeline._open.is_set()

    assert server.call(nested(), 10) == (False, True)


def test_trace_files_replaced_while_running_are_not_followed(server, tmp_path):
    """A pipe, a link or a linked bucket planted at run time is not read."""
    import os

    sent = send(server.port, make_message(), ["billing@example.com"])
    trace = tmp_path / "data" / "traces" / f"{sent.message_id}.json"
    trace.unlink()
    os.mkfifo(trace)
    started = time.monotonic()
    status, body, _ = request(server, f"/api/messages/{sent.message_id}")
    assert (status, body["trace"]) == (200, None)
    assert time.monotonic() - started < 5
    trace.unlink()
    os.symlink("/dev/zero", trace)
    assert request(server, f"/api/messages/{sent.message_id}")[1]["trace"] is None

    other = send(server.port, make_message(), ["billing@example.com"])
    bucket = tmp_path / "data" / "s3" / "inbound"
    (bucket / "billing" / other.message_id).unlink()
    os.symlink("/etc/passwd", bucket / "billing" / other.message_id)
    status, raw, headers = request(server, f"/api/messages/{other.message_id}/raw")
    assert b"root:" not in raw


def test_a_clear_whose_client_leaves_still_holds_deliveries_back(server, tmp_path):
    """The client of a slow DELETE gives up: the clear goes on, and messages
    wait for its end rather than being stored and then deleted with it."""
    junk = tmp_path / "data" / "s3" / "junk"
    junk.mkdir(parents=True)
    files = 50_000  # makes emptying the folder take a while
    for number in range(files):
        (junk / str(number)).write_bytes(b"")

    with socket.create_connection(("127.0.0.1", server.server.api_port)) as client:
        client.sendall(b"DELETE /api/messages HTTP/1.1\r\nHost: localhost\r\n\r\n")
        deadline = time.monotonic() + 30
        while len(os.listdir(junk)) == files:  # until the clear is under way
            assert time.monotonic() < deadline, "the clear did not start"
            time.sleep(0.001)
    # The client has hung up with the clear half done.
    sent = send(server.port, make_message(), ["billing@example.com"])
    assert sent.code == 250
    assert not junk.exists(), "the message was answered before the clear ended"
    bucket = tmp_path / "data" / "s3" / "inbound" / "billing"
    assert (bucket / sent.message_id).is_file()


def test_clears_at_once_all_succeed(server):
    """Overlapping DELETEs take turns: none fails on the other's half-empty folders."""
    for _ in range(20):
        send(server.port, make_message(), ["billing@example.com"])
    with ThreadPoolExecutor(8) as pool:
        calls = pool.map(lambda _: request(server, "/api/messages", "DELETE"), range(8))
        assert {status for status, _, _ in calls} == {200}
