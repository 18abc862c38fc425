"""Several processes sharing the SMTP port (server.workers).

Each test runs ``sesrx serve`` with two processes, as a load test would,
and checks from outside that they act as one server: every message stored
once, one API listing all of them, one clear, one stop.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import smtplib
import socket
import ssl
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml
from loadgen import ServerProcess, run_load, stored_objects
from test_cli import run
from test_load import check_stored, write_config

from sesrx.errors import ConfigError
from sesrx.loader import load_config

from helpers import make_message, send

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

PID_HANDLER = """
import os
from pathlib import Path

PIDS = Path(__file__).with_name("pids")


def pid(event, context):
    message_id = event["Records"][0]["ses"]["mail"]["messageId"]
    (PIDS / message_id).write_text(str(os.getpid()))
"""


def get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.load(response)


def delete(url: str) -> Any:
    request = urllib.request.Request(url, method="DELETE")
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def pid_config(folder: Path) -> Path:
    """Store everything, and call a handler that says which process ran it."""
    (folder / "pid_handlers.py").write_text(PID_HANDLER)
    (folder / "pids").mkdir()
    document = {
        "server": {"workers": 2, "grace_period": 20},
        "functions": {"pid": "pid_handlers:pid"},
        "rule_set": {
            "name": "workers",
            "rules": [
                {
                    "name": "all",
                    "actions": [
                        {"s3": {"bucket_name": "inbound"}},
                        {
                            "lambda": {
                                "function_arn": "pid",
                                "invocation_type": "RequestResponse",
                            }
                        },
                    ],
                }
            ],
        },
    }
    path = folder / "sesrx.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def gone(pid: int, timeout: float) -> bool:
    """Wait up to ``timeout`` seconds for process ``pid`` to end."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not Path(f"/proc/{pid}").exists():
            return True
        status = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        if status == "Z":  # ended; its parent has not collected it
            return True
        time.sleep(0.05)
    return False


def test_two_processes_share_the_port_and_one_api_lists_all(tmp_path):
    """Messages land in both processes; the API lists each once, with its
    invocation, trace and bytes, whichever process took it."""
    server = ServerProcess(pid_config(tmp_path), tmp_path / "data", tmp_path / "log")
    try:
        assert len(server.workers()) == 1
        load = run_load(server.port, messages=1000, sessions=40)
        assert load.errors == []
        assert load.refused == []

        found = get(f"{server.api}/api/wait?count=1000&timeout=20")
        assert found["count"] == 1000
        listed = get(f"{server.api}/api/messages?limit=1000")
        assert listed["total"] == 1000
        invocations = get(f"{server.api}/api/invocations?limit=1000")
        assert invocations["total"] == 1000  # the list keeps the latest 1000
        assert {i["status"] for i in invocations["invocations"]} == {"ok"}
        called = {i["message_id"] for i in invocations["invocations"]}
        assert called <= set(load.acked)

        # The handler noted which process ran each message: both did.
        pids = {
            path.name: int(path.read_text()) for path in (tmp_path / "pids").iterdir()
        }
        assert set(pids) == set(load.acked)
        assert set(pids.values()) == {server.process.pid, *server.workers()}
        taken = next(m for m, pid in pids.items() if pid != server.process.pid)
        trace = get(f"{server.api}/api/messages/{taken}")["trace"]
        assert trace["rules"][0]["actions"][1]["outcome"] == "ok"

        url = f"{server.api}/api/messages/{taken}/raw"
        with urllib.request.urlopen(url, timeout=30) as response:
            assert response.read().endswith(load.acked[taken])
    finally:
        assert server.stop() == 0

    check_stored(tmp_path / "data" / "s3" / "inbound", load.acked)
    assert len(stored_objects(tmp_path / "data" / "s3" / "inbound")) == 1000


def test_a_clear_during_load_pauses_every_process(tmp_path):
    """DELETE /api/messages while both processes take mail: no 451, and
    afterwards the list and the bucket agree message for message."""
    server = ServerProcess(pid_config(tmp_path), tmp_path / "data", tmp_path / "log")
    bucket = tmp_path / "data" / "s3" / "inbound"
    clears = [
        threading.Thread(target=delete, args=(f"{server.api}/api/messages",))
        for _ in range(2)
    ]

    def clear_now(count: int) -> None:
        if count in (200, 500):
            clears[count // 500].start()

    try:
        load = run_load(server.port, messages=1000, sessions=20, on_ack=clear_now)
        assert load.errors == []
        assert load.refused == []
        for clear in clears:
            clear.join(20)
            assert not clear.is_alive(), "a clear did not finish"

        kept = stored_objects(bucket)
        listed = get(f"{server.api}/api/messages?limit=1000")
        assert 0 < len(kept) < 1000
        assert {m["id"] for m in listed["messages"]} == set(kept)
        invoked = get(f"{server.api}/api/invocations?limit=1000")["invocations"]
        assert {i["message_id"] for i in invoked} == set(kept)
    finally:
        assert server.stop() == 0


def test_sigterm_stops_every_process_after_its_handlers(tmp_path):
    """SIGTERM mid-load: exit 0, no process left, every acknowledged
    message stored and its background handler run to its end."""
    config = write_config(tmp_path, workers=2)
    server = ServerProcess(config, tmp_path / "data", tmp_path / "log")
    (worker,) = server.workers()
    signalled = threading.Event()

    def term_after(count: int) -> None:
        if count >= 200 and not signalled.is_set():
            signalled.set()
            server.signal(signal.SIGTERM)

    load = run_load(
        server.port, 2000, sessions=10, on_ack=term_after, recipient="noted@example.com"
    )
    assert server.wait() == 0
    assert gone(worker, 5)

    check_stored(tmp_path / "data" / "s3" / "inbound", load.acked)
    done = {path.name for path in (tmp_path / "done").iterdir()}
    assert set(load.acked) <= done, "a background handler was cut short"
    log = (tmp_path / "log").read_text()
    assert "Traceback" not in log
    assert "lost with worker" not in log


def test_a_killed_primary_takes_its_workers_with_it(tmp_path):
    """SIGKILL of the first process mid-load: the worker stops on its own
    and frees the port; a restart finds every acknowledged message."""
    config = write_config(tmp_path, workers=2)
    server = ServerProcess(config, tmp_path / "data", tmp_path / "log1")
    (worker,) = server.workers()
    killed = threading.Event()

    def kill_after(count: int) -> None:
        if count >= 800 and not killed.is_set():
            killed.set()
            server.signal(signal.SIGKILL)

    load = run_load(server.port, messages=4000, sessions=20, on_ack=kill_after)
    assert server.wait() == -signal.SIGKILL
    assert gone(worker, 30), "the worker outlived the primary"

    restarted = ServerProcess(config, tmp_path / "data", tmp_path / "log2")
    try:
        assert list((tmp_path / "data" / ".tmp").iterdir()) == []
        check_stored(tmp_path / "data" / "s3" / "inbound", load.acked)
        assert send(restarted.port, make_message()).code == 250
    finally:
        assert restarted.stop() == 0


def test_the_others_serve_on_when_a_worker_dies(tmp_path):
    """A worker killed from outside is logged; the primary takes all mail."""
    server = ServerProcess(pid_config(tmp_path), tmp_path / "data", tmp_path / "log")
    try:
        (worker,) = server.workers()
        os.kill(worker, signal.SIGKILL)
        assert gone(worker, 10)

        load = run_load(server.port, messages=100, sessions=5)
        assert len(load.acked) == 100
        deadline = time.monotonic() + 10
        log = ""
        while "ended unexpectedly" not in log and time.monotonic() < deadline:
            log = (tmp_path / "log").read_text()
            time.sleep(0.05)
        assert f"worker 1 (pid {worker}) ended unexpectedly" in log
    finally:
        assert server.stop() == 0


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (0, "expected an integer of at least 1"),
        (65, "expected at most 64 processes"),
        (True, "expected an integer, got true$"),
    ],
)
def test_a_worker_count_out_of_range_names_its_key(tmp_path, value, problem):
    path = pid_config(tmp_path)
    document = yaml.safe_load(path.read_text())
    document["server"]["workers"] = value
    path.write_text(yaml.safe_dump(document))

    with pytest.raises(ConfigError, match=rf"server\.workers: {problem}"):
        load_config(path)


def test_workers_on_the_command_line_are_checked_too(tmp_path):
    """--workers 0 exits 2 before anything listens."""
    result = run("serve", "--workers", "0", "--port", "0", cwd=tmp_path)
    assert result.returncode == 2
    assert "--workers: expected 1 to 64, got 0" in result.stderr


def test_every_process_shows_one_made_up_certificate(tmp_path):
    """With tls: auto the certificate is made before the fork, so STARTTLS
    shows a client the same one whichever process took the connection."""
    path = pid_config(tmp_path)
    document = yaml.safe_load(path.read_text())
    document["server"]["tls"] = "auto"
    path.write_text(yaml.safe_dump(document))
    server = ServerProcess(path, tmp_path / "data", tmp_path / "log")
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE

    def certificate(_: int) -> bytes:
        with smtplib.SMTP("127.0.0.1", server.port, timeout=30) as client:
            client.starttls(context=context)
            assert client.sock is not None
            time.sleep(0.2)  # hold the connection while others arrive
            return client.sock.getpeercert(binary_form=True)

    try:
        with ThreadPoolExecutor(20) as pool:
            shown = set(pool.map(certificate, range(40)))
    finally:
        assert server.stop() == 0

    assert len(shown) == 1


SLEEPER = """
import os
import time
from pathlib import Path

PIDS = Path(__file__).with_name("pids")


def sleeper(event, context):
    message_id = event["Records"][0]["ses"]["mail"]["messageId"]
    (PIDS / message_id).write_text(str(os.getpid()))
    time.sleep(30)
"""


def test_a_dead_workers_background_handlers_are_settled(tmp_path):
    """Killed with Event handlers running, a worker never reports them done:
    the primary settles its messages, so waits for them end."""
    (tmp_path / "pids").mkdir()
    (tmp_path / "sleepers.py").write_text(SLEEPER)
    document = {
        "server": {"workers": 2, "grace_period": 1},
        "functions": {"sleeper": "sleepers:sleeper"},
        "rule_set": {
            "name": "sleep",
            "rules": [{"name": "all", "actions": [{"lambda": {
                "function_arn": "sleeper", "invocation_type": "Event"}}]}],
        },
    }  # fmt: skip
    path = tmp_path / "sesrx.yaml"
    path.write_text(yaml.safe_dump(document))
    server = ServerProcess(path, tmp_path / "data", tmp_path / "log")
    try:
        (worker,) = server.workers()
        load = run_load(server.port, messages=40, sessions=40)
        assert len(load.acked) == 40
        deadline = time.monotonic() + 20
        while len(list((tmp_path / "pids").iterdir())) < 40:
            assert time.monotonic() < deadline, "the handlers did not all start"
            time.sleep(0.05)
        pids = {p.name: int(p.read_text()) for p in (tmp_path / "pids").iterdir()}
        lost = {message_id for message_id, pid in pids.items() if pid == worker}
        assert lost, "the worker took none of the 40 messages"

        os.kill(worker, signal.SIGKILL)
        assert gone(worker, 10)
        deadline = time.monotonic() + 10
        while True:
            listed = get(f"{server.api}/api/messages?limit=100")["messages"]
            done = {m["id"] for m in listed if m["done"]}
            if done == lost or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert done == lost  # the primary's own handlers still run
        calls = get(f"{server.api}/api/invocations?limit=100")["invocations"]
        ended = {c["message_id"]: c["status"] for c in calls}
        assert {ended[message_id] for message_id in lost} == {"error"}
        assert (
            "background handlers lost with worker 1" in (tmp_path / "log").read_text()
        )
    finally:
        assert server.stop() == 0


FORKER = """
import multiprocessing
import time

LEFT = []


def forks(event, context):
    # A process the handler starts and leaves running, as a pool would.
    child = multiprocessing.get_context("fork").Process(target=time.sleep, args=(60,))
    child.start()
    LEFT.append(child)
"""


def test_processes_a_handler_forks_hold_neither_the_port_nor_a_stop(tmp_path):
    """Forked by a handler, a process shares none of sesrx's sockets: SIGTERM
    stops every sesrx process in time, and the port is free afterwards."""
    (tmp_path / "forkers.py").write_text(FORKER)
    document = {
        "server": {"workers": 2, "grace_period": 2},
        "functions": {"forks": "forkers:forks"},
        "rule_set": {"name": "fork", "rules": [{"name": "all", "actions": [
            {"lambda": {"function_arn": "forks",
                        "invocation_type": "RequestResponse"}}]}]},
    }  # fmt: skip
    path = tmp_path / "sesrx.yaml"
    path.write_text(yaml.safe_dump(document))
    server = ServerProcess(path, tmp_path / "data", tmp_path / "log")
    (worker,) = server.workers()
    api_port = int(server.api.rsplit(":", 1)[1])
    left = []
    # A client connected while handlers fork: it must see sesrx hang up.
    idle = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    try:
        assert idle.recv(1024).startswith(b"220")
        load = run_load(server.port, messages=40, sessions=40)
        assert len(load.acked) == 40
        left = [
            child.pid
            for process in (psutil.Process(server.process.pid), psutil.Process(worker))
            for child in process.children()
            if child.pid != worker
        ]
        assert left, "no handler process was left"

        started = time.monotonic()
        server.signal(signal.SIGTERM)
        assert server.wait(30) == 0
        assert gone(worker, 10)
        assert time.monotonic() - started < 15
        for port in (server.port, api_port):
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection(("127.0.0.1", port), timeout=5)
        said = b""
        while chunk := idle.recv(1024):  # times out if a forked process holds it
            said += chunk
        assert said.startswith(b"421")
    finally:
        idle.close()
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        server.stop()
