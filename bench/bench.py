"""Measure sesrx beside a bare aiosmtpd server, in the same run.

    python bench/bench.py                 # every measurement, a few minutes
    python bench/bench.py --only throughput --rounds 5

Throughput runs Postfix's smtp-source (Debian package postfix) against a
bare aiosmtpd server that writes each message to a file and against
``sesrx serve`` with one rule storing to the local bucket folder, once
with one process and once with one per CPU (``--workers``), alternating,
for several rounds. CPU time per message is user + system time of the
server's processes (all their threads) over the run, divided by the
messages; it is steadier than the rates on a shared machine. Linux only.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiofiles
import aiofiles.os
import psutil

from sesrx.storage import _write_atomic_now
from sesrx.testing import dkim_record, dkim_sign

HERE = Path(__file__).resolve().parent
RECIPIENT = "bob@example.com"
SENDER = "alice@sender.example"
BARE = "bare aiosmtpd"

HANDLERS = """
def returns_at_once(event, context):
    return {"disposition": "CONTINUE"}
"""


# -- servers ------------------------------------------------------------------


@dataclass
class Running:
    name: str
    process: subprocess.Popen[bytes]
    port: int
    folder: Path  # where its messages land

    def cpu_seconds(self) -> float:
        """Return user + system time of the server and its worker processes."""
        server = psutil.Process(self.process.pid)
        times = [process.cpu_times() for process in (server, *server.children())]
        return sum(t.user + t.system for t in times)

    def peak_rss(self) -> int:
        """Return the process's peak resident set size in bytes (VmHWM)."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmHWM")

    def stored(self) -> list[Path]:
        return [
            path
            for path in self.folder.rglob("*")
            if path.is_file() and "AMAZON_SES_SETUP" not in path.name
        ]


def sesrx_config(workdir: Path, rules: str, extra: str = "") -> Path:
    (workdir / "bench_handlers.py").write_text(HANDLERS)
    path = workdir / "sesrx.yaml"
    path.write_text(
        "functions:\n"
        "  returns_at_once: bench_handlers:returns_at_once\n"
        f"{extra}"
        "rule_set:\n"
        "  name: bench\n"
        f"  rules:\n{rules}"
    )
    return path


STORE_RULE = """\
    - name: store-everything
      actions:
        - s3: {bucket_name: inbound}
"""

LAMBDA_RULE = """\
    - name: call
      actions:
        - lambda: {function_arn: returns_at_once, invocation_type: RequestResponse}
"""


@contextmanager
def bare_server(workdir: Path) -> Iterator[Running]:
    folder = workdir / "bare"
    process = subprocess.Popen(
        [sys.executable, str(HERE / "bare_server.py"), "--dir", str(folder)],
        stdout=subprocess.PIPE,
    )
    assert process.stdout is not None
    line = process.stdout.readline().decode()
    port = int(line.split()[-1])
    try:
        yield Running(BARE, process, port, folder)
    finally:
        stop(process)


@contextmanager
def sesrx_server(
    workdir: Path, config: Path, *flags: str, name: str = "sesrx"
) -> Iterator[Running]:
    data = workdir / "sesrx-data"
    log = workdir / "sesrx.log"
    with log.open("wb") as stream:
        process = subprocess.Popen(
            [
                sys.executable, "-m", "sesrx", "serve",
                "--config", str(config), "--port", "0", "--api-port", "0",
                "--data-dir", str(data), *flags,
            ],
            stderr=stream,
        )  # fmt: skip
    port = wait_for_banner(log, process)
    try:
        yield Running(name, process, port, data / "s3" / "inbound")
    finally:
        stop(process)


def wait_for_banner(log: Path, process: subprocess.Popen[bytes]) -> int:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for line in log.read_text(errors="replace").splitlines():
            if "listening on 127.0.0.1:" in line:
                return int(line.rsplit(":", 1)[1].split()[0])
        if process.poll() is not None:
            raise RuntimeError(f"sesrx exited: {log.read_text()}")
        time.sleep(0.01)
    raise RuntimeError("sesrx did not start")


def stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


# -- throughput -----------------------------------------------------------------


@dataclass
class Round:
    server: str
    rate: float
    cpu_ms: float


def smtp_source(port: int, messages: int, sessions: int, size: int, file: Path | None):
    command = [
        "smtp-source", "-d", "-s", str(sessions), "-m", str(messages),
        "-f", SENDER, "-t", RECIPIENT, "-M", "bench.example",
    ]  # fmt: skip
    command += ["-F", str(file)] if file else ["-l", str(size), "-S", "bench"]
    subprocess.run([*command, f"127.0.0.1:{port}"], check=True, timeout=600)


def one_round(running: Running, messages: int, sessions: int, size: int, file):
    before = running.cpu_seconds()
    started = time.perf_counter()
    smtp_source(running.port, messages, sessions, size, file)
    elapsed = time.perf_counter() - started
    cpu = running.cpu_seconds() - before
    stored = len(running.stored())
    if stored != messages:
        raise RuntimeError(f"{running.name} stored {stored} of {messages}")
    return Round(running.name, messages / elapsed, cpu / messages * 1000)


def throughput(args: argparse.Namespace, file: Path | None = None) -> list[Round]:
    """Run bare aiosmtpd, then sesrx with each process count, in every round."""
    rounds = []
    for number in range(args.rounds):
        for workers in (0, *args.workers):
            with tempfile.TemporaryDirectory(prefix="sesrx-bench-") as tmp:
                workdir = Path(tmp)
                extra = dkim_zone() if file else ""
                if not workers:
                    context = bare_server(workdir)
                else:
                    config = sesrx_config(workdir, STORE_RULE, extra)
                    flags = ("--workers", str(workers), *args.sesrx_flags)
                    name = f"sesrx, {workers} proc"
                    context = sesrx_server(workdir, config, *flags, name=name)
                with context as running:
                    result = one_round(
                        running, args.messages, args.sessions, args.size, file
                    )
            rounds.append(result)
            print(
                f"  round {number + 1} {result.server:15} {result.rate:8.0f} msg/s"
                f"  {result.cpu_ms:.3f} ms CPU/msg",
                flush=True,
            )
    return rounds


def report(rounds: list[Round]) -> None:
    """Print, for each sesrx run, the medians and its ratios to bare aiosmtpd."""
    bare = [r for r in rounds if r.server == BARE]
    for name in dict.fromkeys(r.server for r in rounds if r.server != BARE):
        ours = [r for r in rounds if r.server == name]
        ratio = statistics.median(
            o.rate / b.rate for b, o in zip(bare, ours, strict=True)
        )
        cpu_ratio = statistics.median(
            o.cpu_ms / b.cpu_ms for b, o in zip(bare, ours, strict=True)
        )
        print(
            f"  median, {name}: {statistics.median(r.rate for r in ours):.0f}"
            f" msg/s against bare {statistics.median(r.rate for r in bare):.0f},"
            f" ratio {ratio:.2f}; CPU/msg"
            f" {statistics.median(r.cpu_ms for r in ours):.3f} ms against"
            f" {statistics.median(r.cpu_ms for r in bare):.3f} ({cpu_ratio:.2f}x)",
            flush=True,
        )


# -- DKIM ----------------------------------------------------------------------


def signed_message(folder: Path, size: int) -> Path:
    """Write a DKIM-signed message (RSA-2048) for smtp-source -F."""
    body = b"".join(
        f"{n:05d}".encode() + b"x" * 73 + b"\r\n" for n in range(size // 80)
    )
    message = (
        b"From: Alice <alice@sender.example>\r\nTo: bob@example.com\r\n"
        b"Subject: signed\r\nDate: Thu, 03 Dec 2026 10:00:00 +0000\r\n"
        b"Message-ID: <bench@sender.example>\r\n\r\n" + body
    )
    signed = dkim_sign(message, "sender.example", "bench")
    path = folder / "signed.eml"
    # smtp-source appends CRLF to each line of the file.
    path.write_bytes(signed.replace(b"\r\n", b"\n"))
    return path


def dkim_zone() -> str:
    return f'dns:\n  txt:\n    bench._domainkey.sender.example: "{dkim_record()}"\n'


# -- latency ---------------------------------------------------------------------


class Client:
    """A raw SMTP session that times the end of DATA to the reply."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""
        self.reply()
        self.command(b"EHLO bench.example")

    def reply(self) -> bytes:
        while True:
            lines = self.buffer.split(b"\r\n")
            for index, line in enumerate(lines[:-1]):
                if line[3:4] == b" ":
                    self.buffer = b"\r\n".join(lines[index + 1 :])
                    return line
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            self.buffer += chunk

    def command(self, line: bytes) -> bytes:
        self.sock.sendall(line + b"\r\n")
        return self.reply()

    def timed_message(self, recipient: str, message: bytes) -> float:
        self.command(f"MAIL FROM:<{SENDER}>".encode())
        self.command(f"RCPT TO:<{recipient}>".encode())
        assert self.command(b"DATA").startswith(b"354")
        self.sock.sendall(message)
        time.sleep(0.0005)  # let the body arrive before the clock starts
        started = time.perf_counter()
        self.sock.sendall(b".\r\n")
        reply = self.reply()
        elapsed = time.perf_counter() - started
        assert reply.startswith(b"250"), reply
        return elapsed * 1000


def small_message(subject: str = "latency") -> bytes:
    return (
        b"From: <alice@sender.example>\r\nTo: <bob@example.com>\r\n"
        b"Subject: " + subject.encode() + b"\r\n\r\n" + (b"x" * 76 + b"\r\n") * 25
    )


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return ordered[len(ordered) // 2], ordered[int(len(ordered) * 0.99)]


def latency(args: argparse.Namespace) -> dict[str, tuple[float, float]]:
    results = {}
    with tempfile.TemporaryDirectory(prefix="sesrx-bench-") as tmp:
        workdir = Path(tmp)
        config = sesrx_config(workdir, LAMBDA_RULE)
        for name, context in (
            ("bare aiosmtpd", bare_server(workdir)),
            ("sesrx, RequestResponse Lambda", sesrx_server(workdir, config)),
        ):
            with context as running:
                client = Client(running.port)
                for _ in range(50):  # warm up
                    client.timed_message(RECIPIENT, small_message())
                samples = [
                    client.timed_message(RECIPIENT, small_message())
                    for _ in range(args.latency_messages)
                ]
                results[name] = percentiles(samples)
                print(f"  {name:32} p50 {results[name][0]:.3f} ms"
                      f"  p99 {results[name][1]:.3f} ms", flush=True)  # fmt: skip
    return results


# -- start-up ----------------------------------------------------------------------


def startup(args: argparse.Namespace) -> list[float]:
    times = []
    for _ in range(args.startup_runs):
        with tempfile.TemporaryDirectory(prefix="sesrx-bench-") as tmp:
            workdir = Path(tmp)
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                port = probe.getsockname()[1]
            started = time.perf_counter()
            process = subprocess.Popen(
                [sys.executable, "-m", "sesrx", "serve", "--port", str(port),
                 "--api-port", "0", "--data-dir", str(workdir / "data")],
                stderr=subprocess.DEVNULL,
            )  # fmt: skip
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), 1).close()
                    break
                except OSError:
                    if process.poll() is not None:
                        raise RuntimeError("sesrx exited") from None
                    time.sleep(0.002)
            times.append(time.perf_counter() - started)
            stop(process)
    print(f"  start to accepting: median {statistics.median(times) * 1000:.0f} ms"
          f" (min {min(times) * 1000:.0f}, max {max(times) * 1000:.0f})")  # fmt: skip
    return times


# -- large mail ---------------------------------------------------------------------


def large_message(attachment_bytes: int) -> bytes:
    encoded = base64.encodebytes(os.urandom(attachment_bytes)).replace(b"\n", b"\r\n")
    return (
        b"From: <alice@sender.example>\r\nTo: <bob@example.com>\r\n"
        b"Subject: large\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="b1"\r\n\r\n'
        b"--b1\r\nContent-Type: text/plain\r\n\r\nSee the attachment.\r\n"
        b"--b1\r\nContent-Type: application/octet-stream\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n" + encoded + b"--b1--\r\n"
    )


def large(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    message = large_message(args.attachment_mb * 1_000_000)
    results = {}
    for kind in ("bare", "sesrx"):
        with tempfile.TemporaryDirectory(prefix="sesrx-bench-") as tmp:
            workdir = Path(tmp)
            if kind == "bare":
                context = bare_server(workdir)
            else:
                context = sesrx_server(workdir, sesrx_config(workdir, STORE_RULE))
            with context as running:
                results[running.name] = one_large(running, message)
    return results


def one_large(running: Running, message: bytes) -> dict[str, float]:
    """Send ``message`` while another session sends small ones every 20 ms."""
    baseline = running.peak_rss()
    gaps: list[float] = []  # every reply of the other session
    stored: list[float] = []  # its replies to the final dot
    done = threading.Event()

    def others() -> None:
        # Every reply of this session is timed, not only the one to DATA.
        client = Client(running.port)
        message = small_message("other")
        while not done.is_set():
            for line in (f"MAIL FROM:<{SENDER}>", f"RCPT TO:<{RECIPIENT}>", "DATA"):
                started = time.perf_counter()
                client.command(line.encode())
                gaps.append((time.perf_counter() - started) * 1000)
            client.sock.sendall(message)
            started = time.perf_counter()
            client.sock.sendall(b".\r\n")
            assert client.reply().startswith(b"250")
            stored.append((time.perf_counter() - started) * 1000)
            time.sleep(0.02)

    watcher = threading.Thread(target=others)
    watcher.start()
    time.sleep(0.5)
    client = Client(running.port)
    reply_ms = client.timed_message(RECIPIENT, message)
    time.sleep(0.5)
    done.set()
    watcher.join()
    peak = running.peak_rss()
    found = [p for p in running.stored() if p.stat().st_size >= len(message)]
    exact = len(found) == 1 and found[0].read_bytes().endswith(message)
    result = {
        "size_mb": len(message) / 1e6,
        "reply_ms": reply_ms,
        "baseline_rss_mb": baseline / 1e6,
        "peak_rss_mb": peak / 1e6,
        "rss_over_size": peak / len(message),
        "others_max_ms": max(gaps),
        "others_stored_max_ms": max(stored),
        "others_p50_ms": statistics.median(gaps + stored),
        "exact": float(exact),
    }
    print(
        f"  {running.name:14} {result['size_mb']:.1f} MB: stored byte-exact"
        f" {bool(exact)}, reply {reply_ms:.0f} ms after the dot, peak RSS"
        f" {result['peak_rss_mb']:.0f} MB ({result['rss_over_size']:.2f}x the"
        f" message; {baseline / 1e6:.0f} MB before); another session: commands"
        f" max {max(gaps):.1f} ms, end of data max {max(stored):.1f} ms, median"
        f" {statistics.median(gaps + stored):.1f} ms over"
        f" {len(gaps) + len(stored)} replies",
        flush=True,
    )
    return result


# -- scale ------------------------------------------------------------------------


def scale(args: argparse.Namespace) -> dict[str, float]:
    """200 rules, 100 recipients: RCPT round trips, and rule evaluation alone."""
    rules = (
        "".join(
            f"    - name: rule-{n}\n      recipients: [user{n}@example.com]\n"
            "      actions:\n"
            "        - add_header: {header_name: X-Rule, header_value: r}\n"
            for n in range(199)
        )
        + STORE_RULE
    )
    recipients = tuple(f"user{n * 2}@example.com" for n in range(100))
    with tempfile.TemporaryDirectory(prefix="sesrx-bench-") as tmp:
        workdir = Path(tmp)
        config = sesrx_config(workdir, rules)
        evaluation = rule_evaluation_ms(config, recipients)
        with sesrx_server(workdir, config) as running:
            client = Client(running.port)
            rcpt_ms = []
            end_of_data = []
            for _ in range(20):
                client.command(f"MAIL FROM:<{SENDER}>".encode())
                for recipient in recipients:
                    started = time.perf_counter()
                    reply = client.command(f"RCPT TO:<{recipient}>".encode())
                    rcpt_ms.append((time.perf_counter() - started) * 1000)
                    assert reply.startswith(b"250"), reply
                assert client.command(b"DATA").startswith(b"354")
                client.sock.sendall(small_message())
                started = time.perf_counter()
                client.sock.sendall(b".\r\n")
                assert client.reply().startswith(b"250")
                end_of_data.append((time.perf_counter() - started) * 1000)
    p50, p99 = percentiles(rcpt_ms)
    data50, _ = percentiles(end_of_data)
    print(
        f"  200 rules, 100 recipients: RCPT round trip p50 {p50:.3f} ms, p99"
        f" {p99:.3f} ms; matching all 200 rules against the 100 recipients"
        f" {evaluation:.3f} ms; end of DATA to reply p50 {data50:.1f} ms"
        f" (51 rules' actions run)",
        flush=True,
    )
    return {"rcpt_p50": p50, "rcpt_p99": p99, "evaluation": evaluation}


def rule_evaluation_ms(path: Path, recipients: tuple[str, ...]) -> float:
    """Return the median time to find every rule's recipients, in-process."""
    from sesrx.loader import load_config
    from sesrx.rules import matched_recipients

    config = load_config(path)
    samples = []
    for _ in range(200):
        started = time.perf_counter()
        matched_recipients(config.rule_set, recipients, config.verified_domains)
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


# -- durability ----------------------------------------------------------------------


def durability(args: argparse.Namespace) -> dict[str, Round]:
    """Throughput of sesrx with server.durability none, then fsync."""
    results = {}
    for mode in ("none", "fsync"):
        with tempfile.TemporaryDirectory(prefix="sesrx-bench-") as tmp:
            workdir = Path(tmp)
            extra = f"server: {{durability: {mode}}}\n"
            config = sesrx_config(workdir, STORE_RULE, extra)
            with sesrx_server(workdir, config) as running:
                result = one_round(
                    running, args.messages, args.sessions, args.size, None
                )
        results[mode] = result
        print(
            f"  durability {mode:5} {result.rate:8.0f} msg/s"
            f"  {result.cpu_ms:.3f} ms CPU/msg",
            flush=True,
        )
    return results


# -- file writes ------------------------------------------------------------------


def writes(args: argparse.Namespace) -> dict[str, float]:
    """Write files the ways sesrx could, 20 at a time, and time each way.

    On the loop (what sesrx does for small files), aiofiles one call at a
    time (open, write, close, rename: four trips to a thread), and one trip
    to a plain thread pool for the whole write and rename (what sesrx does
    for large files).
    """
    results = {}
    for size in (2048, 1024 * 1024):
        count = 2000 if size < 65536 else 200
        for way, write in WAYS.items():
            with tempfile.TemporaryDirectory(prefix="sesrx-bench-") as tmp:
                folder = Path(tmp)
                (folder / ".tmp").mkdir()
                cpu = time.process_time()
                elapsed = asyncio.run(_write_files(write, folder, size, count))
                cpu = time.process_time() - cpu
            results[f"{way} {size}"] = elapsed / count * 1e6
            print(
                f"  {size:8} bytes, {way:20} {elapsed / count * 1e6:7.1f} us"
                f" per file, {cpu / count * 1e6:7.1f} us CPU per file",
                flush=True,
            )
    return results


async def _write_files(write: Any, folder: Path, size: int, count: int) -> float:
    data = b"x" * size
    names = iter(range(count))

    async def writer() -> None:
        for number in names:
            await write(folder / f"{number}.eml", data, folder / ".tmp")

    started = time.perf_counter()
    await asyncio.gather(*(writer() for _ in range(20)))
    return time.perf_counter() - started


async def _on_loop(path: Path, data: bytes, tmp: Path) -> None:
    _write_atomic_now(path, [data], tmp)


async def _aiofiles(path: Path, data: bytes, tmp: Path) -> None:
    temporary = tmp / f".{os.urandom(16).hex()}.part"
    async with aiofiles.open(temporary, "wb") as stream:
        await stream.write(data)
    await aiofiles.os.replace(temporary, path)


async def _thread_pool(path: Path, data: bytes, tmp: Path) -> None:
    await asyncio.get_running_loop().run_in_executor(
        None, _write_atomic_now, path, [data], tmp
    )


WAYS = {"on the loop": _on_loop, "aiofiles": _aiofiles, "thread pool": _thread_pool}


# -- report ------------------------------------------------------------------------


def machine() -> str:
    cpu = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return (
        f"{platform.node()}: {os.cpu_count()} CPUs ({cpu}), Python"
        f" {platform.python_version()}, {platform.system()} {platform.release()}"
    )


SECTIONS = (
    "throughput",
    "dkim",
    "latency",
    "startup",
    "large",
    "scale",
    "durability",
    "writes",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--latency-messages", type=int, default=1000)
    parser.add_argument("--startup-runs", type=int, default=5)
    parser.add_argument("--attachment-mb", type=int, default=30)
    parser.add_argument(
        "--only",
        choices=SECTIONS,
        action="append",
    )
    parser.add_argument(
        "--workers",
        type=int,
        nargs="+",
        default=sorted({1, os.cpu_count() or 1}),
        help="sesrx process counts to measure throughput with (default: 1 and"
        " one per CPU)",
    )
    parser.add_argument("--sesrx-flags", nargs="*", default=[])
    args = parser.parse_args()
    if shutil.which("smtp-source") is None:
        sys.exit("smtp-source not found: apt-get install postfix")
    wanted = args.only or SECTIONS

    print(f"# {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {machine()}")
    print(f"# {' '.join([Path(sys.argv[0]).name, *sys.argv[1:]])}")
    sections: dict[str, Callable[[], None]] = {}

    def run_throughput() -> None:
        print(f"throughput: {args.messages} messages of {args.size} bytes,"
              f" {args.sessions} sessions, {args.rounds} rounds")  # fmt: skip
        report(throughput(args))

    def run_dkim() -> None:
        with tempfile.TemporaryDirectory(prefix="sesrx-bench-") as tmp:
            file = signed_message(Path(tmp), args.size)
            print("throughput, every message DKIM-signed (RSA-2048):")
            report(throughput(args, file))

    sections = {
        "throughput": run_throughput,
        "dkim": run_dkim,
        "latency": lambda: latency(args),
        "startup": lambda: startup(args),
        "large": lambda: large(args),
        "scale": lambda: scale(args),
        "durability": lambda: durability(args),
        "writes": lambda: writes(args),
    }
    for name in wanted:
        sections[name]()


if __name__ == "__main__":
    main()
