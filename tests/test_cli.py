"""The sesrx command, run as a user runs it: a separate process."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from helpers import call, make_message, read_calls, rule, rule_set, send, store

SESRX = [sys.executable, "-m", "sesrx"]


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SESRX, *args], capture_output=True, text=True, cwd=cwd, timeout=60
    )


class Serving:
    """A ``sesrx serve`` process and the port it reported."""

    def __init__(self, *args: str, cwd: Path) -> None:
        self.process = subprocess.Popen(
            [*SESRX, "serve", "--port", "0", "--api-port", "0", *args],
            cwd=cwd,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.banner: list[str] = []
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.banner.append(line)
            if "press Ctrl+C" in line:
                break
        found = re.search(r"listening on 127\.0\.0\.1:(\d+)", "".join(self.banner))
        assert found, "".join(self.banner)
        self.port = int(found.group(1))

    def terminate(self) -> tuple[int, str]:
        self.process.send_signal(signal.SIGTERM)
        _, rest = self.process.communicate(timeout=30)
        return self.process.returncode, rest


def test_check_config_prints_a_summary(tmp_path):
    """check-config on a good file prints the rule table and exits 0."""
    config = Path(__file__).resolve().parent.parent / "config" / "sesrx.yaml"

    result = run("check-config", str(config))

    assert result.returncode == 0, result.stderr
    assert "rule set:    default-rule-set (4 rules)" in result.stdout
    assert "S3 s3://support-mail/tickets/<messageId>" in result.stdout


def test_check_config_warns_about_unverified_recipients(write_config):
    """A rule for a domain outside verified_domains loads, with a warning."""
    path = write_config(
        {
            "verified_domains": ["acme.example"],
            "rule_set": rule_set(rule("r", store("box1"), recipients=["o@acme.test"])),
        }
    )

    result = run("check-config", str(path))

    assert result.returncode == 0
    assert (
        "warning: rule_set.rules[0].recipients[0]: o@acme.test is not in a "
        "verified domain, so mail to it is refused"
    ) in result.stdout


def test_check_config_reports_errors_without_a_traceback(write_config, tmp_path):
    """A bad config names the file and key path, exits 2, and shows no traceback."""
    path = write_config({"rule_set": rule_set(rule("r", store("UPPER")))})

    result = run("check-config", str(path))

    assert result.returncode == 2
    assert f"{path}: rule_set.rules[0].actions[0].s3.bucket_name: " in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_with_a_bad_config_exits_2(tmp_path):
    """serve refuses a config that does not load, with exit code 2."""
    path = tmp_path / "bad.yaml"
    path.write_text("server: {port: 25}\n")

    result = run("serve", "--config", str(path))

    assert result.returncode == 2
    assert "rule_set: required key is missing" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_on_the_embedded_default(tmp_path):
    """Without --config every domain is accepted and stored under ./sesrx-data."""
    server = Serving(cwd=tmp_path)

    sent = send(server.port, make_message(), rcpt_tos=["anyone@anywhere.example"])
    code, log = server.terminate()

    banner = "".join(server.banner)
    assert "config:    (embedded default)" in banner
    assert "rule set:  default-rule-set (1 rule)" in banner
    assert f"data:      {tmp_path / 'sesrx-data'}" in banner
    assert re.search(r"sesrx \d+\.\d+\.\d+ listening on", banner)
    assert (tmp_path / "sesrx-data" / "s3" / "inbound" / sent.message_id).is_file()
    assert code == 0
    assert (
        f"{sent.message_id} from=<alice@sender.example> to=anyone@anywhere.example "
        f"dkim=GRAY rules=store-everything(S3:ok) reply='250 OK {sent.message_id}'"
    ) in log
    assert "stopped" in log


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback here")
def test_the_banner_names_every_smtp_address_as_a_client_writes_it(tmp_path):
    """An IPv6 address is in brackets, and the implicit TLS port is named."""
    path = tmp_path / "sesrx.yaml"
    path.write_text(
        "data_dir: ./data\n"
        "server: {host: '::1', port: 0, api: {port: 0}, tls: {port: 0}}\n"
        "rule_set: {name: r, rules: [{name: all, actions: [{s3: {bucket_name: box}}]}]}"
    )
    process = subprocess.Popen(
        [*SESRX, "serve", "--config", str(path)], stderr=subprocess.PIPE, text=True
    )
    assert process.stderr is not None
    first = process.stderr.readline()
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=30)

    assert re.search(
        r"listening on \[::1\]:\d+, TLS from the first byte on \[::1\]:\d+$", first
    ), first


def test_sigterm_waits_for_running_handlers(write_config, tmp_path):
    """On SIGTERM, a background handler still running is allowed to finish."""
    path = write_config(
        {"rule_set": rule_set(rule("r", call("handlers:slow", "Event")))}
    )
    server = Serving("--config", str(path), cwd=tmp_path)

    send(server.port, make_message())
    started = time.monotonic()
    code, log = server.terminate()

    assert code == 0
    assert [c["name"] for c in read_calls(tmp_path)] == ["slow"]
    assert time.monotonic() - started < 10
    # The thread it ran on waits for more work: that holds nothing up.
    assert "exiting with" not in log


def test_sigterm_abandons_handlers_after_the_grace_period(write_config, tmp_path):
    """A handler that never returns does not keep the server from exiting."""
    path = write_config(
        {
            "server": {"grace_period": 0.5},
            "rule_set": rule_set(rule("r", call("handlers:forever", "Event"))),
        }
    )
    server = Serving("--config", str(path), cwd=tmp_path)

    send(server.port, make_message())
    started = time.monotonic()
    code, log = server.terminate()

    assert code == 0
    assert time.monotonic() - started < 5
    assert "1 Lambda handlers still running after 0.5 s; abandoning them" in log


@pytest.mark.parametrize(
    ("flag", "other", "named"),
    [("--port", "--api-port", ""), ("--api-port", "--port", " for the HTTP API")],
)
def test_busy_port_exits_1(tmp_path, flag, other, named):
    """A port in use (SMTP's or the API's) is named and the exit code is 1."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        result = subprocess.run(
            [*SESRX, "serve", flag, str(port), other, "0"],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            timeout=60,
        )

    assert result.returncode == 1
    assert f"cannot start: cannot listen on 127.0.0.1:{port}{named}:" in result.stderr
    assert "Traceback" not in result.stderr


def test_handler_output_is_tagged_in_the_log(write_config, tmp_path):
    """What a handler prints is tagged with message id, function and request id."""
    path = write_config(
        {
            "functions": {"chatty": "handlers:chatty"},
            "rule_set": rule_set(rule("r", call("chatty", "RequestResponse"))),
        }
    )
    server = Serving("--config", str(path), cwd=tmp_path)

    message_id = send(server.port, make_message()).message_id
    _, log = server.terminate()
    request_id = read_calls(tmp_path)[0]["context"]["aws_request_id"]

    tag = f"[{message_id} chatty {request_id}]"
    assert f"sesrx.lambda {tag}: printed line one" in log
    assert f"my.handler {tag}: logged warning 42" in log
    assert f"{tag}: \n" not in log


def test_idle_sessions_are_told_of_the_shutdown(tmp_path):
    """An open session gets 421 before the connection closes on SIGTERM."""
    server = Serving(cwd=tmp_path)

    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as conn:
        stream = conn.makefile("rb")
        assert stream.readline().startswith(b"220 ")
        code, _ = server.terminate()
        last = stream.readline()

    assert code == 0
    assert last == b"421 4.3.2 Service shutting down\r\n"


def test_a_stop_lets_a_message_finish_and_starts_no_other(write_config, tmp_path):
    """On SIGTERM a message being processed gets its reply, then 421; a
    session in the middle of a transaction gets 421 at once and cannot send
    its message; the stop waits for neither the grace period nor clients
    that would go on."""
    path = write_config(
        {
            "server": {"grace_period": 8},
            "rule_set": rule_set(rule("r", call("handlers:slow"))),
        }
    )
    server = Serving("--config", str(path), cwd=tmp_path)

    def opened() -> tuple[socket.socket, Any]:
        conn = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        stream = conn.makefile("rb")
        assert stream.readline().startswith(b"220 ")
        for command in (b"HELO client.example", b"MAIL FROM:<a@sender.example>",
                        b"RCPT TO:<b@example.com>"):  # fmt: skip
            conn.sendall(command + b"\r\n")
            assert stream.readline().startswith(b"250 ")
        return conn, stream

    sending, sending_replies = opened()
    waiting, waiting_replies = opened()
    sending.sendall(b"DATA\r\n")
    assert sending_replies.readline().startswith(b"354 ")
    sending.sendall(make_message() + b".\r\n")
    time.sleep(0.5)  # the slow handler (1.5 s) is running
    started = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    with contextlib.suppress(OSError):  # the session may be closed already
        waiting.sendall(b"DATA\r\n")

    assert waiting_replies.readline() == b"421 4.3.2 Service shutting down\r\n"
    assert waiting_replies.readline() == b""
    assert sending_replies.readline().startswith(b"250 OK ")
    assert sending_replies.readline() == b"421 4.3.2 Service shutting down\r\n"
    assert sending_replies.readline() == b""
    _, log = server.process.communicate(timeout=30)
    sending.close()
    waiting.close()

    assert server.process.returncode == 0
    assert time.monotonic() - started < 5  # the handler's time, not the grace's
    assert "still in flight" not in log
    assert [c["name"] for c in read_calls(tmp_path)] == ["slow"]


def ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.mark.parametrize(
    ("workers", "inherited"),
    [("1", signal.SIG_DFL), ("2", signal.SIG_DFL), ("1", signal.SIG_IGN)],
    ids=["one-process", "two-processes", "started-in-the-background-by-a-shell"],
)
def test_ctrl_c_while_starting_ends_quietly(tmp_path, workers, inherited):
    """Ctrl+C at any moment of start-up, to the whole process group as a
    terminal sends it: exit 130 with one line, or a normal stop, and never a
    traceback from any process. A shell starts ``sesrx serve &`` with SIGINT
    ignored: it is not lost all the same."""
    interrupted = 0
    for delay in (0, 0.05, 0.1, 0.2, 0.3, 0.5):
        process = subprocess.Popen(
            # Python tells each module it imported: the interrupts fall after
            # Python's own start, in sesrx's (sesrx/__init__ imports little).
            [sys.executable, "-X", "importtime", "-m", "sesrx", "serve"]
            + ["--port", "0", "--api-port", "0", "--workers", workers],
            cwd=tmp_path,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
            preexec_fn=ignore_sigint if inherited is signal.SIG_IGN else None,
        )
        assert process.stderr is not None
        for line in process.stderr:
            if line.rstrip().endswith("| sesrx"):
                break
        time.sleep(0.01 + delay)
        os.killpg(process.pid, signal.SIGINT)
        try:
            _, log = process.communicate(timeout=30)
        finally:  # a process that ignored the interrupt must not outlive the test
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)

        assert "Traceback" not in log, log
        assert process.returncode in (0, 130), log
        if process.returncode == 130:
            assert log.endswith("sesrx: interrupted\n"), log
            interrupted += 1
        else:
            assert "stopped" in log
    # Importing the server's modules takes far longer than 10 ms.
    assert interrupted >= 1


def test_threads_left_by_handlers_do_not_block_exit(write_config, tmp_path):
    """Non-daemon threads a handler starts do not keep the process alive."""
    path = write_config(
        {"rule_set": rule_set(rule("r", call("handlers:leaves_threads")))}
    )
    server = Serving("--config", str(path), cwd=tmp_path)

    send(server.port, make_message())
    started = time.monotonic()
    code, log = server.terminate()

    assert code == 0
    assert time.monotonic() - started < 10
    assert "threads and 0 child processes of handlers still running" in log


def test_child_processes_and_exit_hooks_do_not_block_exit(write_config, tmp_path):
    """A handler's child process or atexit hook does not keep sesrx running."""
    path = write_config(
        {"rule_set": rule_set(rule("r", call("handlers:leaves_a_process")))}
    )
    server = Serving("--config", str(path), cwd=tmp_path)

    send(server.port, make_message())
    started = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    # The child keeps the stderr pipe open, so wait for the exit itself.
    code = server.process.wait(timeout=30)
    assert server.process.stderr is not None
    server.process.stderr.close()

    assert code == 0
    assert time.monotonic() - started < 10


def test_check_config_warns_about_unusable_dkim_records(write_config):
    """A key record with a bad p= or without _domainkey in its name is flagged."""
    path = write_config(
        {
            "dns": {
                "txt": {
                    "sel1._domainkey.sender.example": "v=DKIM1; k=rsa; p=notbase64!!",
                    "sel1.sender.example": "v=DKIM1; k=ed25519; p=AAAA",
                    "sel2._domainkey.sender.example": "v=DKIM1; k=ed25519; p=AAAA",
                }
            },
            "rule_set": rule_set(rule("r", store("box1"))),
        }
    )

    result = run("check-config", str(path))

    assert result.returncode == 0
    warnings = [
        line for line in result.stdout.splitlines() if line.startswith("warning")
    ]
    assert warnings == [
        "warning: dns.txt.sel1._domainkey.sender.example: "
        "p= is not a base64 public key",
        "warning: dns.txt.sel1.sender.example: "
        "a DKIM key's name is <selector>._domainkey...",
    ]


def test_healthcheck_answers_for_a_running_server(tmp_path):
    """healthcheck exits 0 against a ready server and 1 once it has stopped."""
    server = Serving(cwd=tmp_path)
    found = re.search(r"web page:  http://127\.0\.0\.1:(\d+)/", "".join(server.banner))
    assert found, server.banner
    api_port = found.group(1)

    ready = run("healthcheck", "--api-port", api_port)
    assert ready.returncode == 0, ready.stderr
    assert f"ready (127.0.0.1:{server.port})" in ready.stdout

    assert server.terminate()[0] == 0
    gone = run("healthcheck", "--api-port", api_port, "--timeout", "2")
    assert gone.returncode == 1
    assert f"127.0.0.1:{api_port}/readyz" in gone.stderr


def test_healthcheck_reads_the_api_address_from_the_config(tmp_path):
    """With --config (or $SESRX_CONFIG) the API port comes from server.api."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        api_port = probe.getsockname()[1]
    path = tmp_path / "sesrx.yaml"
    path.write_text(
        f"server: {{port: 0, api: {{port: {api_port}}}}}\n"
        "rule_set: {name: r, rules: [{name: all, actions: [{stop: {}}]}]}\n"
    )
    # The last --api-port wins over the 0 that Serving passes.
    server = Serving("--config", str(path), "--api-port", str(api_port), cwd=tmp_path)
    # An edit the server refuses (a handler that cannot be imported) is no
    # reason to call the running server unhealthy, nor to import handlers.
    path.write_text(path.read_text() + "functions: {f: 'missing_module:handler'}\n")
    try:
        checked = subprocess.run(
            [*SESRX, "healthcheck"],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "SESRX_CONFIG": str(path)},
        )
    finally:
        server.terminate()
    assert checked.returncode == 0, checked.stderr


def test_json_logs_carry_the_message_id(write_config, tmp_path):
    """--log-format json: one object per line; lines about a message name it."""
    path = write_config(
        {
            "functions": {"chatty": "handlers:chatty", "raises": "handlers:raises"},
            "rule_set": rule_set(
                rule(
                    "r",
                    call("chatty", "RequestResponse"),
                    call("raises", "RequestResponse"),
                )
            ),
        }
    )
    server = Serving("--config", str(path), "--log-format", "json", cwd=tmp_path)
    message_id = send(server.port, make_message()).message_id
    code, log = server.terminate()

    assert code == 0
    records = [json.loads(line) for line in log.splitlines() if line.strip()]
    about = [r for r in records if r.get("message_id") == message_id]
    assert {r["logger"] for r in about} >= {
        "sesrx.lambda",
        "my.handler",
        "sesrx.message",
    }
    printed = next(r for r in about if r["message"] == "printed line one")
    assert printed["function"] == "chatty"
    assert printed["level"] == "INFO"
    assert "time" in printed
    summary = next(r for r in about if r["logger"] == "sesrx.message")
    assert summary["message"].startswith(message_id)
    # sesrx's line about a handler's error is tagged like the handler's own.
    error = next(r for r in about if r["level"] == "ERROR")
    assert error["function"] == "raises"
    assert error["request_id"]
    assert error["request_id"] in error["message"]


def test_check_config_describes_every_kind_of_action(tmp_path):
    """Each action kind has a line in the summary (none raises)."""
    path = tmp_path / "sesrx.yaml"
    topic = "arn:aws:sns:us-east-1:123456789012:mail"
    path.write_text(
        "topics: {mail: {}}\n"
        "rule_set:\n"
        "  name: every-kind\n"
        "  rules:\n"
        "    - name: all\n"
        "      actions:\n"
        f"        - sns: {{topic_arn: '{topic}', encoding: Base64}}\n"
        "        - add_header: {header_name: X-Seen, header_value: '1'}\n"
        "        - s3: {bucket_name: inbound}\n"
        "        - stop: {}\n"
    )
    result = run("check-config", str(path))

    assert result.returncode == 0, result.stderr
    assert f"SNS {topic} (Base64)" in result.stdout
    assert "AddHeader X-Seen: 1" in result.stdout


HTTP_200 = b"HTTP/1.1 200 OK\r\n"


def garbage_server(answer: bytes, trickle: bool = False) -> tuple[int, threading.Event]:
    """Serve ``answer`` to every connection; one byte a second if trickling."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    done = threading.Event()

    def serve() -> None:
        listener.settimeout(0.2)
        while not done.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            with connection:
                connection.recv(4096)
                for index in range(len(answer)):
                    if done.is_set():
                        break
                    if trickle:
                        connection.sendall(answer[index : index + 1])
                        time.sleep(1)
                    else:
                        connection.sendall(answer)
                        break
        listener.close()

    threading.Thread(target=serve, daemon=True).start()
    return listener.getsockname()[1], done


@pytest.mark.parametrize(
    ("answer", "trickle"),
    [
        (b"SSH-2.0-OpenSSH_9.2\r\n", False),
        (
            b'HTTP/1.1 200 OK\r\nContent-Length: 30\r\n\r\n{"status": "not ready"}',
            False,
        ),
        (HTTP_200 + b"Content-Length: 2\r\n\r\n[]", False),
        (HTTP_200 + b"Content-Length: 100\r\n\r\n" + b"x" * 100, True),
    ],
    ids=["not-http", "not-ready", "a-list", "trickled"],
)
def test_healthcheck_fails_cleanly_against_a_wrong_server(answer, trickle):
    """Exit 1 without a traceback, within its timeout, whatever comes back."""
    port, done = garbage_server(answer, trickle)
    started = time.monotonic()
    try:
        result = run("healthcheck", "--api-port", str(port), "--timeout", "2")
    finally:
        done.set()

    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert time.monotonic() - started < 10


def test_handler_output_cannot_forge_log_lines(tmp_path):
    """Escape sequences and line breaks a handler prints are shown escaped."""
    (tmp_path / "forger.py").write_text(
        "def handler(event, context):\n"
        "    print('\\x1b[2K\\x1b[1Gforged\\r')\n"
        "    import logging\n"
        "    logging.getLogger('x').warning('one\\nERROR sesrx: forged')\n"
        "    raise RuntimeError('two\\r\\nINFO sesrx.message: forged')\n"
    )
    path = tmp_path / "sesrx.yaml"
    path.write_text(
        "data_dir: ./data\n"
        "functions: {forger: 'forger:handler'}\n"
        "rule_set: {name: r, rules: [{name: all, actions: "
        "[{lambda: {function_arn: forger, invocation_type: RequestResponse}}]}]}\n"
    )
    server = Serving("--config", str(path), cwd=tmp_path)
    send(server.port, make_message())
    _, log = server.terminate()

    assert "\x1b" not in log
    assert "\\x1b[2K\\x1b[1Gforged\\r" in log
    assert "one\\nERROR sesrx: forged" in log
    # A traceback keeps its lines, each indented under the record's first.
    assert "raised RuntimeError: two\\r\n    | INFO sesrx.message: forged" in log
    assert "\n    | Traceback (most recent call last):\n" in log
    assert not any(line.startswith("INFO sesrx.message") for line in log.splitlines())


def test_a_handler_closing_stdio_does_not_send_the_log_to_clients(tmp_path):
    """Descriptors 0-2 closed by a handler go to the next connections; the
    log keeps going where it went, and no client reads a line of it."""
    (tmp_path / "closer.py").write_text(
        "import os\n"
        "closed = []\n"
        "def handler(event, context):\n"
        "    if not closed:\n"
        "        for descriptor in (0, 1, 2):\n"
        "            os.close(descriptor)\n"
        "        closed.append(True)\n"
    )
    path = tmp_path / "sesrx.yaml"
    path.write_text(
        "data_dir: ./data\n"
        "functions: {closer: 'closer:handler'}\n"
        "rule_set: {name: r, rules: [{name: all, actions: "
        "[{lambda: {function_arn: closer, invocation_type: RequestResponse}}]}]}\n"
    )
    server = Serving("--config", str(path), cwd=tmp_path)
    assert send(server.port, make_message()).code == 250

    conversations = []
    for _ in range(4):  # each may hold one of the freed descriptors
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as conn:
            conn.sendall(
                b"HELO client.example\r\nMAIL FROM:<a@sender.example>\r\n"
                b"RCPT TO:<b@example.com>\r\nDATA\r\n"
            )
            time.sleep(0.2)
            conn.sendall(make_message() + b".\r\nQUIT\r\n")
            received = b""
            while chunk := conn.recv(65536):
                received += chunk
        conversations.append(received)
    _, log = server.terminate()

    for received in conversations:
        lines = received.split(b"\r\n")
        assert lines[-1] == b""
        assert all(re.fullmatch(rb"[2-5]\d\d[ -].*", line) for line in lines[:-1])
        assert lines[-2].startswith(b"221")
    assert log.count("reply='250 OK") == 5


def test_healthcheck_does_not_follow_a_redirect():
    """/readyz must say ready itself; a redirect to a ready server is not."""
    ready = b'{"status": "ready", "smtp": "x"}'
    target, stop_target = garbage_server(
        HTTP_200 + f"Content-Length: {len(ready)}\r\n\r\n".encode() + ready
    )
    moved = f"HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:{target}/readyz\r\n"
    port, stop = garbage_server(moved.encode() + b"Content-Length: 0\r\n\r\n")
    try:
        assert run("healthcheck", "--api-port", str(target)).returncode == 0
        result = run("healthcheck", "--api-port", str(port))
    finally:
        stop.set()
        stop_target.set()

    assert result.returncode == 1
    assert "302" in result.stderr
