"""Load and faults: no acknowledged message is ever lost, doubled or damaged.

Each test runs ``sesrx serve`` as its own process and drives it with many
parallel SMTP sessions over loopback (tests/loadgen.py).
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import threading
from pathlib import Path

import pytest
import yaml
from loadgen import ServerProcess, numbered_message, run_load, stored_objects

from helpers import make_message, send

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

EVENT_HANDLER = """
import time
from pathlib import Path

DONE = Path(__file__).with_name("done")


def note(event, context):
    time.sleep(0.3)
    message_id = event["Records"][0]["ses"]["mail"]["messageId"]
    (DONE / message_id).write_text("done")
"""


def write_config(folder: Path, **server: object) -> Path:
    (folder / "done").mkdir(exist_ok=True)
    (folder / "load_handlers.py").write_text(EVENT_HANDLER)
    document = {
        "server": {"grace_period": 20, **server},
        "functions": {"note": "load_handlers:note"},
        "rule_set": {
            "name": "load",
            "rules": [
                {
                    "name": "noted",
                    "recipients": ["noted@example.com"],
                    "actions": [
                        {"s3": {"bucket_name": "inbound"}},
                        {"lambda": {"function_arn": "note"}},
                    ],
                },
                {"name": "store", "actions": [{"s3": {"bucket_name": "inbound"}}]},
            ],
        },
    }
    path = folder / "sesrx.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def check_stored(bucket: Path, acked: dict[str, bytes]) -> dict[str, bytes]:
    """Every acknowledged message is stored once, ending in the bytes sent."""
    stored = stored_objects(bucket)
    for message_id, message in acked.items():
        assert message_id in stored, f"acknowledged {message_id} is missing"
        assert stored[message_id].endswith(message), f"{message_id} is damaged"
    numbers = [
        int(content.split(b"\r\nX-Seq: ", 1)[1].split(b"\r\n", 1)[0])
        for content in stored.values()
    ]
    assert len(numbers) == len(set(numbers)), "a message was stored twice"
    return stored


def test_twenty_thousand_messages_over_fifty_sessions(tmp_path):
    """20,000 messages, 50 sessions: every 250 is on disk, once, intact."""
    server = ServerProcess(write_config(tmp_path), tmp_path / "data", tmp_path / "log")
    try:
        load = run_load(server.port, messages=20_000, sessions=50)
    finally:
        assert server.stop() == 0

    assert load.errors == []
    assert load.refused == []
    assert len(load.acked) == 20_000
    stored = check_stored(tmp_path / "data" / "s3" / "inbound", load.acked)
    assert len(stored) == 20_000
    assert list((tmp_path / "data" / ".tmp").iterdir()) == []


def test_sigkill_under_load_loses_nothing_acknowledged(tmp_path):
    """Killed mid-load and restarted: every acknowledged message is whole, and
    no partial object or temporary file is left."""
    config = write_config(tmp_path)
    server = ServerProcess(config, tmp_path / "data", tmp_path / "log1")
    killed = threading.Event()

    def kill_after(count: int) -> None:
        if count >= 1500 and not killed.is_set():
            killed.set()
            server.signal(signal.SIGKILL)

    load = run_load(server.port, messages=6000, sessions=20, on_ack=kill_after)
    assert server.wait() == -signal.SIGKILL
    assert killed.is_set()
    assert len(load.acked) < 6000  # the kill cut the load short

    restarted = ServerProcess(config, tmp_path / "data", tmp_path / "log2")
    try:
        # Temporary files of writes the kill interrupted are gone.
        assert list((tmp_path / "data" / ".tmp").iterdir()) == []
        stored = check_stored(tmp_path / "data" / "s3" / "inbound", load.acked)
        # Whatever else was stored (processed, but the reply was lost to the
        # kill) is a whole message too.
        for content in stored.values():
            number = content.split(b"\r\nX-Seq: ", 1)[1].split(b"\r\n", 1)[0]
            assert content.endswith(numbered_message(int(number)))
        assert send(restarted.port, make_message()).code == 250
    finally:
        assert restarted.stop() == 0


def test_sigterm_under_load_finishes_sessions_and_handlers(tmp_path):
    """SIGTERM mid-load: exit 0, every acknowledged message stored, and every
    background handler of an acknowledged message has run to its end."""
    config = write_config(tmp_path)
    server = ServerProcess(config, tmp_path / "data", tmp_path / "log")
    signalled = threading.Event()

    def term_after(count: int) -> None:
        if count >= 300 and not signalled.is_set():
            signalled.set()
            server.signal(signal.SIGTERM)

    load = run_load(
        server.port, 4000, sessions=10, on_ack=term_after, recipient="noted@example.com"
    )
    assert server.wait() == 0

    assert signalled.is_set()
    assert 300 <= len(load.acked) < 4000
    check_stored(tmp_path / "data" / "s3" / "inbound", load.acked)
    done = {path.name for path in (tmp_path / "done").iterdir()}
    assert set(load.acked) <= done, "a background handler was cut short"
    log = (tmp_path / "log").read_text()
    assert "Traceback" not in log
    # Sessions open at the end were told why they were closed.
    assert all(reply.startswith(b"421") for reply in load.refused)


# -- a disk that fills up or turns read-only ------------------------------------


@pytest.fixture
def small_disk(tmp_path):
    """Mount a 2 MB tmpfs for the data folder (root only); unmount after."""
    mount = tmp_path / "disk"
    mount.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({result.stderr.strip()}); needs root")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_answers_451_and_recovers(tmp_path, small_disk):
    config = write_config(tmp_path)
    server = ServerProcess(config, small_disk / "data", tmp_path / "log")
    try:
        filler = small_disk / "filler"
        with contextlib.suppress(OSError), filler.open("wb") as stream:
            while True:
                stream.write(b"\0" * 65536)
                stream.flush()

        body = "\r\n".join(["x" * 70] * 300)
        full = send(server.port, make_message(body=body))
        assert full.data is not None
        assert full.data[0] == 451
        assert full.data[1].startswith("4.3.0")

        filler.unlink()
        again = send(server.port, make_message(body=body))
        assert again.code == 250
        bucket = small_disk / "data" / "s3" / "inbound"
        assert list(stored_objects(bucket)) == [again.message_id]
    finally:
        assert server.stop() == 0


def test_a_read_only_disk_answers_451_and_recovers(tmp_path, small_disk):
    config = write_config(tmp_path)
    server = ServerProcess(config, small_disk / "data", tmp_path / "log")
    try:
        remount = ["mount", "-o", "remount,ro", str(small_disk)]
        subprocess.run(remount, check=True)
        refused = send(server.port, make_message())
        assert refused.data is not None
        assert refused.data[:1] == (451,)
        assert refused.data[1].startswith("4.3.0")

        subprocess.run(["mount", "-o", "remount,rw", str(small_disk)], check=True)
        assert send(server.port, make_message()).code == 250
    finally:
        assert server.stop() == 0


def test_fsync_durability_stores_and_flushes(tmp_path):
    """durability: fsync still stores every message (its cost is in bench/)."""
    server = ServerProcess(
        write_config(tmp_path, durability="fsync"), tmp_path / "data", tmp_path / "log"
    )
    try:
        load = run_load(server.port, messages=200, sessions=4)
    finally:
        assert server.stop() == 0
    assert len(load.acked) == 200
    check_stored(tmp_path / "data" / "s3" / "inbound", load.acked)
