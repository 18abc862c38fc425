"""A load generator for tests: many SMTP sessions, each message numbered.

Every message carries its number in a header and at the end of its body,
so that what was stored can be checked against what was acknowledged.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil

RECIPIENT = "bob@example.com"
_ACCEPTED = re.compile(rb"^250 OK ([0-9a-v]{40})$")


def numbered_message(number: int, size: int = 2048, to: str = RECIPIENT) -> bytes:
    """Return message ``number``: about ``size`` bytes, unique, CRLF lines."""
    header = (
        f"From: <load@sender.example>\r\nTo: <{to}>\r\n"
        f"Subject: load {number}\r\nX-Seq: {number}\r\n\r\n"
    ).encode()
    line = f"{number:08d}".encode() + b"x" * 70 + b"\r\n"
    body = line * max(1, (size - len(header)) // len(line))
    return header + body + f"END-{number}\r\n".encode()


@dataclass
class Load:
    """What a load run sent and what the server acknowledged."""

    acked: dict[str, bytes] = field(default_factory=dict)  # message id -> bytes
    refused: list[bytes] = field(default_factory=list)  # replies other than 250
    errors: list[str] = field(default_factory=list)  # sessions that broke off

    def digest(self, message_id: str) -> str:
        return hashlib.sha256(self.acked[message_id]).hexdigest()


async def _reply(reader: asyncio.StreamReader) -> bytes:
    while True:
        line = await reader.readuntil(b"\r\n")
        if line[3:4] != b"-":
            return line.rstrip(b"\r\n")


async def _session(
    port: int,
    numbers: range,
    load: Load,
    on_ack: Callable[[int], None] | None,
    recipient: str,
) -> None:
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError as exc:
        load.errors.append(f"connect: {exc}")
        return
    try:
        await _reply(reader)
        writer.write(b"EHLO load.example\r\n")
        await _reply(reader)
        for number in numbers:
            message = numbered_message(number, to=recipient)
            envelope = f"MAIL FROM:<load@sender.example>\r\nRCPT TO:<{recipient}>\r\n"
            writer.write(envelope.encode())
            await _reply(reader)
            await _reply(reader)
            writer.write(b"DATA\r\n")
            if not (await _reply(reader)).startswith(b"354"):
                load.errors.append("DATA refused")
                return
            writer.write(message + b".\r\n")
            reply = await _reply(reader)
            accepted = _ACCEPTED.match(reply)
            if accepted is None:
                load.refused.append(reply)
                if reply.startswith(b"421"):
                    return
                continue
            load.acked[accepted.group(1).decode()] = message
            if on_ack is not None:
                on_ack(len(load.acked))
        writer.write(b"QUIT\r\n")
        await writer.drain()
    except (OSError, asyncio.IncompleteReadError) as exc:
        load.errors.append(f"{type(exc).__name__}: {exc}")
    finally:
        writer.close()


def run_load(
    port: int,
    messages: int,
    sessions: int,
    on_ack: Callable[[int], None] | None = None,
    recipient: str = RECIPIENT,
) -> Load:
    """Send ``messages`` numbered messages over ``sessions`` parallel sessions."""
    load = Load()
    per_session = messages // sessions

    async def all_sessions() -> None:
        await asyncio.gather(
            *(
                _session(
                    port,
                    range(n * per_session, (n + 1) * per_session),
                    load,
                    on_ack,
                    recipient,
                )
                for n in range(sessions)
            )
        )

    asyncio.run(all_sessions())
    return load


class ServerProcess:
    """``sesrx serve`` in its own process, as a user runs it."""

    def __init__(self, config: Path, data_dir: Path, log: Path) -> None:
        self.log = log
        with log.open("wb") as stream:
            self.process = subprocess.Popen(
                [
                    sys.executable, "-m", "sesrx", "serve", "--config", str(config),
                    "--port", "0", "--api-port", "0", "--data-dir", str(data_dir),
                ],
                stderr=stream,
            )  # fmt: skip
        self.port = self._wait_for(r"listening on 127\.0\.0\.1:(\d+)")
        api_port = self._wait_for(r"web page: +http://[^:]+:(\d+)/")
        self.api = f"http://127.0.0.1:{api_port}"

    def _wait_for(self, pattern: str) -> int:
        """Return the number the start-up block gives after ``pattern``."""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            text = self.log.read_text(errors="replace")
            found = re.search(pattern, text)
            if found:
                return int(found.group(1))
            if self.process.poll() is not None:
                raise RuntimeError(f"sesrx exited:\n{text}")
            time.sleep(0.02)
        raise RuntimeError("sesrx did not start")

    def workers(self) -> list[int]:
        """Return the pids of the server's worker processes."""
        return [child.pid for child in psutil.Process(self.process.pid).children()]

    def signal(self, number: signal.Signals) -> None:
        self.process.send_signal(number)

    def wait(self, timeout: float = 60) -> int:
        return self.process.wait(timeout)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.signal(signal.SIGTERM)
        return self.wait()


def stored_objects(bucket: Path) -> dict[str, bytes]:
    """Return every object file under a bucket folder, by name."""
    return {
        path.name: path.read_bytes()
        for path in bucket.rglob("*")
        if path.is_file() and "AMAZON_SES_SETUP" not in path.name
    }
