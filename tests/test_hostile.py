"""Hostile input over real sessions: smuggling, random sessions, header bombs,
and paths that try to leave the data folder."""

from __future__ import annotations

import re
import socket
import ssl
import time
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from loadgen import ServerProcess, stored_objects

from sesrx.loader import load_config
from sesrx.storage import key_to_relative_path, relative_path_to_key
from sesrx.threaded import ServerThread

from helpers import make_message, rule, rule_set, send, store, stored_messages

pytestmark = pytest.mark.e2e

# A code, then text without control characters (the client's own bytes
# could put a CR or an escape sequence into a reply that echoes them).
REPLY_LINE = re.compile(rb"[2-5][0-9][0-9](?:[ -][^\x00-\x1f\x7f]*)?")


class Session:
    """A raw SMTP session that reads every reply line it is sent."""

    def __init__(self, port: int, timeout: float = 10) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buffer = b""
        self.greeting = self.reply()

    def reply(self) -> bytes:
        """Return the next complete reply (the last line of a multi-line one)."""
        while True:
            if b"\r\n" in self.buffer:
                line, self.buffer = self.buffer.split(b"\r\n", 1)
                assert REPLY_LINE.fullmatch(line), f"not an SMTP reply: {line!r}"
                if line[3:4] == b" ":
                    return line
                continue
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed; unread {self.buffer!r}")
            self.buffer += chunk

    def command(self, line: bytes) -> bytes:
        self.sock.sendall(line + b"\r\n")
        return self.reply()

    def pending(self, wait: float = 0.5) -> bytes:
        """Return whatever else the server sends within ``wait`` seconds."""
        self.sock.settimeout(wait)
        try:
            return self.buffer + self.sock.recv(65536)
        except TimeoutError:
            return self.buffer
        finally:
            self.sock.settimeout(10)

    def close(self) -> None:
        self.sock.close()


def config_file(folder: Path, **server: object) -> Path:
    path = folder / "sesrx.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "data_dir": "./data",
                "server": {"port": 0, "api": {"port": 0}, **server},
                "rule_set": rule_set(rule("all", store("inbound"))),
            }
        )
    )
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> ServerThread:
    folder = tmp_path_factory.mktemp("hostile")
    running = ServerThread(load_config(config_file(folder)))
    running.start()
    yield running
    running.stop()


def bucket_of(server: ServerThread) -> Path:
    return server.server.config.data_dir / "s3" / "inbound"


# -- SMTP smuggling --------------------------------------------------------------

SMUGGLED = (
    b"MAIL FROM:<evil@attacker.example>\r\nRCPT TO:<bob@example.com>\r\n"
    b"DATA\r\nSubject: smuggled\r\n\r\nevil\r\n"
)


@pytest.mark.parametrize(
    "end",
    [b"\n.\n", b"\n.\r\n", b"\r.\r\n", b"\r\n.\r", b"\r\n.\n", b"\r.\n", b"\n.\r"],
    ids=repr,
)
def test_no_end_of_data_variant_splits_a_message(server, end):
    """A fake end of data hides no second message: one reply, nothing stored."""
    before = set(stored_messages(bucket_of(server)))
    session = Session(server.port)
    session.command(b"EHLO client.example")
    session.command(b"MAIL FROM:<alice@sender.example>")
    session.command(b"RCPT TO:<bob@example.com>")
    assert session.command(b"DATA").startswith(b"354")

    session.sock.sendall(b"Subject: first\r\n\r\nfirst" + end + SMUGGLED + b".\r\n")
    assert session.reply() == (
        b"554 5.6.0 Message has a bare CR or LF; end lines with CRLF"
    )
    assert session.pending() == b""  # no reply to a smuggled command
    assert session.command(b"QUIT").startswith(b"221")
    session.close()
    assert set(stored_messages(bucket_of(server))) == before


@pytest.mark.parametrize(
    "line",
    [b"FOO\rBAR", b"X\x1b[31mY", b"DATA\rX", b"QUIT\rX", b"\x00\x7f", b"\rNOOP"],
    ids=repr,
)
def test_replies_never_echo_control_characters(server, line):
    """A reply that repeats the client's word shows a CR, NUL or escape byte
    as "?", so every reply stays one line of text."""
    session = Session(server.port)
    session.command(b"EHLO client.example")

    reply = session.command(line)  # Session checks the whole line

    assert reply.startswith(b"5")
    assert session.command(b"NOOP").startswith(b"250")
    session.close()


def test_commands_pipelined_before_starttls_are_dropped(tmp_path):
    """What a client sends after STARTTLS, before the handshake, is discarded."""
    running = ServerThread(load_config(config_file(tmp_path, tls="auto")))
    running.start()
    try:
        session = Session(running.port)
        session.command(b"EHLO client.example")
        session.sock.sendall(b"STARTTLS\r\nMAIL FROM:<evil@attacker.example>\r\n")
        assert session.reply().startswith(b"220")
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        session.sock = context.wrap_socket(session.sock)
        assert session.command(b"EHLO client.example").startswith(b"250")
        # The injected MAIL FROM did not survive the handshake.
        assert session.command(b"RCPT TO:<bob@example.com>").startswith(b"503")
        session.close()
    finally:
        running.stop()


# -- random sessions ----------------------------------------------------------------

# Mostly printable ASCII, with control characters (all but LF, which ends
# the line) and other Unicode now and then.
line_text = st.text(
    alphabet=st.one_of(
        st.characters(min_codepoint=32, max_codepoint=126),
        st.characters(max_codepoint=31, blacklist_characters="\n"),
        st.characters(min_codepoint=127, blacklist_categories=("Cs",)),
    ),
    max_size=60,
)
address = st.one_of(
    st.just("bob@example.com"),
    st.just("<>"),
    st.builds(lambda a, b: f"{a}@{b}", line_text, line_text),
    line_text,
)
body_line = st.binary(max_size=200).map(
    lambda raw: raw.replace(b"\r\n", b"").replace(b"\r", b"").replace(b"\n", b"")
)
step = st.one_of(
    st.tuples(st.sampled_from([b"EHLO", b"HELO"]), line_text.map(str.encode)),
    st.tuples(st.just(b"MAIL"), address.map(str.encode)),
    st.tuples(st.just(b"RCPT"), address.map(str.encode)),
    st.tuples(st.just(b"DATA"), st.lists(body_line, max_size=20).map(b"\r\n".join)),
    st.tuples(
        st.sampled_from([b"RSET", b"NOOP", b"VRFY", b"HELP", b"XYZZY", b"STARTTLS"]),
        line_text.map(str.encode),
    ),
)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(opened=st.booleans(), steps=st.lists(step, min_size=1, max_size=12))
def test_random_sessions_get_valid_replies_and_store_what_they_ack(
    server, opened, steps
):
    """Whatever a session sends, every reply is SMTP, the server lives on, and
    each acknowledged message is stored as sent."""
    if opened:  # half the sessions start with a transaction the server accepts
        steps = [
            (b"EHLO", b"client.example"),
            (b"MAIL", b"alice@sender.example"),
            (b"RCPT", b"bob@example.com"),
            *steps,
        ]
    session = Session(server.port)
    acked: dict[str, bytes] = {}
    try:
        for verb, argument in steps:
            if verb in (b"MAIL", b"RCPT"):
                word = b"FROM:" if verb == b"MAIL" else b"TO:"
                reply = session.command(verb + b" " + word + b"<" + argument + b">")
            elif verb == b"DATA":
                if not session.command(b"DATA").startswith(b"354"):
                    continue
                # Dot-stuffed (RFC 5321 4.5.2), so no line ends the data early.
                stuffed = b"\r\n".join(
                    b"." + line if line.startswith(b".") else line
                    for line in argument.split(b"\r\n")
                )
                session.sock.sendall(stuffed + b"\r\n.\r\n")
                reply = session.reply()
                if reply.startswith(b"250 OK "):
                    acked[reply.split()[-1].decode()] = argument + b"\r\n"
            else:
                reply = session.command(verb + (b" " + argument if argument else b""))
            if reply.startswith(b"421"):
                break
    except ConnectionError:
        pass  # the server may end a session (too many bad commands)
    finally:
        session.close()

    event("acknowledged a message" if acked else "acknowledged none")
    stored = stored_objects(bucket_of(server))
    for message_id, content in acked.items():
        assert stored[message_id].endswith(content)
    # The server still answers a new session.
    probe = Session(server.port)
    probe.close()
    assert probe.greeting.startswith(b"220")


# -- header bombs ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def process(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bombs")
    running = ServerProcess(config_file(folder), folder / "data", folder / "log")
    yield running, folder / "data" / "s3" / "inbound"
    running.stop()


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def timed_send(port: int, message: bytes) -> tuple[int | None, float]:
    started = time.monotonic()
    sent = send(port, message)
    return sent.code, time.monotonic() - started


@pytest.mark.parametrize(
    ("name", "message", "code"),
    [
        (
            "10,000 header fields",
            b"".join(f"X-H{n}: {n}\r\n".encode() for n in range(10_000))
            + make_message(),
            250,
        ),
        (
            "one 1 MB header line",
            b"X-Long: " + b"a" * 1_000_000 + b"\r\n" + make_message(),
            500,  # longer than SMTP's 1000-byte lines: refused, not read
        ),
        (
            "a 900 KB folded header",
            b"X-Folded: start"
            + (b"\r\n " + b"c" * 900) * 1000
            + b"\r\n"
            + make_message(),
            250,
        ),
        (
            "10,000 addresses in To",
            make_message(to=", ".join(f"user{n}@example.com" for n in range(10_000))),
            500,  # a 240 KB unfolded line is past SMTP's line limit
        ),
        (
            "10,000 folded addresses in To",
            b"To: "
            + b",\r\n ".join(f"user{n}@example.com".encode() for n in range(10_000))
            + b"\r\n"
            + make_message(),
            250,
        ),
        (
            "MIME nested 2,000 deep",
            b"From: a@sender.example\r\nMIME-Version: 1.0\r\n"
            + b"".join(
                f'Content-Type: multipart/mixed; boundary="b{n}"\r\n'
                f"\r\n--b{n}\r\n".encode()
                for n in range(2000)
            )
            + b"Content-Type: text/plain\r\n\r\ninner\r\n",
            250,
        ),
    ],
    ids=lambda value: value if isinstance(value, str) else "",
)
def test_header_bombs_are_answered_in_bounded_time_and_memory(
    process, name, message, code
):
    running, bucket = process
    reply, seconds = timed_send(running.port, message)

    assert reply == code, name
    assert seconds < 15, f"{name} took {seconds:.1f} s"
    if code == 250:
        assert any(
            content.endswith(message) for content in stored_objects(bucket).values()
        )
    # The server answers others afterwards, and stays within bounded memory.
    assert send(running.port, make_message()).code == 250
    assert peak_rss_mb(running.process.pid) < 400


# -- paths ---------------------------------------------------------------------------


@settings(max_examples=500)
@given(key=st.text(max_size=80))
def test_every_key_stays_in_its_bucket_and_maps_back(key):
    """No S3 key, however odd, names a path outside its bucket folder."""
    relative = key_to_relative_path(key)
    assert not relative.is_absolute()
    assert all(part not in ("", ".", "..") for part in relative.parts)
    assert "\x00" not in str(relative)
    assert relative_path_to_key(relative) == key


def test_no_prefix_header_or_subject_writes_outside_the_data_folder(
    write_config, serve, tmp_path
):
    """Prefixes, added headers and subjects full of path syntax stay inside."""
    hostile = [
        "../../../../tmp/escape",
        "/etc/passwd",
        "..\\..\\win",
        "a/../../b",
        "%2e%2e/x",
    ]
    rules = [
        rule(f"r{n}", store("inbound", object_key_prefix=prefix))
        for n, prefix in enumerate(hostile)
    ]
    path = write_config({"rule_set": rule_set(*rules)})
    server = serve(path)
    outside_before = {p for p in tmp_path.rglob("*") if "data" not in p.parts}

    sent = send(
        server.port,
        make_message(subject="../../../etc/cron.d/x", extra=(("X-Path", "/../../x"),)),
    )
    assert sent.code == 250

    data = tmp_path / "data"
    outside_after = {p for p in tmp_path.rglob("*") if "data" not in p.parts}
    assert outside_after == outside_before
    stored = [p for p in (data / "s3" / "inbound").rglob("*") if p.is_file()]
    for file in stored:
        assert file.resolve().is_relative_to((data / "s3" / "inbound").resolve())
    assert sum(1 for file in stored if file.name == sent.message_id) == len(hostile)
    assert not Path("/tmp/escape").exists()
