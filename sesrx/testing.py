"""Run sesrx inside a test suite: send mail, wait for it, look at the results.

:class:`Sesrx` starts a server on free loopback ports in the test process
(the pytest plugin's ``sesrx_server`` fixture is one), and everything it
returns is read from the same files and state the HTTP API serves.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import smtplib
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from email.message import EmailMessage
from email.parser import BytesHeaderParser
from email.utils import getaddresses, parseaddr
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import Any, TypeVar

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from sesrx.config import Config
from sesrx.loader import load_config, load_default_config, load_document
from sesrx.mailbox import Entry, Query
from sesrx.setup_notice import SETUP_KEY
from sesrx.threaded import ServerThread
from sesrx.trace import lambda_actions

__all__ = ["Received", "Reply", "Sesrx", "dkim_record", "dkim_sign", "message_bytes"]

SMTP_TIMEOUT = 30.0

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Reply:
    """How the server answered one message."""

    code: int  # the reply to DATA, or to RCPT when every recipient was refused
    text: str
    refused: Mapping[str, tuple[int, str]]  # recipients refused at RCPT

    @property
    def message_id(self) -> str | None:
        """Return the SES message id of an accepted message."""
        if self.code != 250 or not self.text.startswith("OK "):
            return None
        return self.text.split()[-1]


@dataclass(frozen=True, slots=True)
class Received:
    """A message the server has finished processing."""

    id: str
    mail_from: str
    recipients: tuple[str, ...]
    subject: str
    reply: str
    rules: tuple[str, ...]  # the rules that matched
    received_at: str
    _server: Sesrx = dataclasses.field(repr=False, compare=False)

    @property
    def trace(self) -> dict[str, Any]:
        """Return what the rule set did: rules, actions, verdicts."""
        trace = self._server._call(self._server.server.message_trace(self.id))
        if trace is None:
            raise LookupError(f"no trace was written for {self.id}")
        return trace

    @property
    def verdicts(self) -> dict[str, Any]:
        """Return the SPF, DKIM, DMARC, spam and virus verdicts."""
        verdicts: dict[str, Any] = self.trace["verdicts"]
        return verdicts

    @property
    def raw(self) -> bytes:
        """Return the first object an S3 action stored, else the bytes received."""
        found = self._server._call(self._server.server.message_source(self.id))
        if found is None:
            raise LookupError(f"the bytes of {self.id} are no longer kept")
        content = found[1]
        return content.read_bytes() if isinstance(content, Path) else content

    def event(self, function: str | None = None) -> dict[str, Any]:
        """Return the event a Lambda handler (``function``, or the first) got."""
        for action in lambda_actions(self.trace):
            detail = action["detail"]
            if function is None or detail["function_name"] == function:
                event: dict[str, Any] = detail["event"]
                return event
        which = f" of {function!r}" if function else ""
        raise LookupError(f"no Lambda action{which} ran for {self.id}")


class Sesrx:
    """An in-process sesrx on free loopback ports.

    ``config`` is a path to a YAML file, a dict holding what the YAML would,
    a loaded :class:`Config`, or None for the embedded default. Relative
    paths and handler modules of a dict are looked for in ``base_dir``.
    The listening addresses and the data folder are always replaced.
    """

    def __init__(
        self,
        config: Config | Mapping[str, Any] | Path | str | None,
        data_dir: Path | str,
        base_dir: Path | str | None = None,
    ) -> None:
        data_dir = Path(data_dir)
        loaded = _load(config, Path(base_dir) if base_dir else Path.cwd())
        server = loaded.server
        tls = server.tls and dataclasses.replace(
            server.tls, port=None if server.tls.port is None else 0
        )
        api = server.api and dataclasses.replace(server.api, host="127.0.0.1", port=0)
        settings = dataclasses.replace(
            server, host="127.0.0.1", port=0, tls=tls, api=api
        )
        self._thread = ServerThread(
            dataclasses.replace(loaded, server=settings, data_dir=data_dir)
        )
        self.data_dir = data_dir
        self.server = self._thread.server

    def start(self) -> None:
        """Start listening."""
        self._thread.start()

    def stop(self) -> None:
        """Shut down as on SIGTERM: finish messages, wait for handlers."""
        self._thread.stop()

    def __enter__(self) -> Sesrx:
        self.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def host(self) -> str:
        """Return the SMTP address: always 127.0.0.1."""
        return self._thread.host

    @property
    def port(self) -> int:
        """Return the SMTP port."""
        return self._thread.port

    @property
    def smtp_address(self) -> tuple[str, int]:
        """Return ``(host, port)`` for ``smtplib.SMTP(*address)``."""
        return self.host, self.port

    @property
    def api_url(self) -> str | None:
        """Return the HTTP API's base URL, or None if the config turns it off."""
        port = self.server.api_port
        return None if port is None else f"http://127.0.0.1:{port}"

    def send(
        self,
        message: bytes | str | EmailMessage,
        *,
        mail_from: str | None = None,
        to: str | list[str] | tuple[str, ...] | None = None,
    ) -> Reply:
        """Send one message over SMTP and return the server's answer.

        The envelope defaults to the message's From and its To and Cc
        addresses. A refused message is returned, not raised, so that a test
        can assert on its code.
        """
        data = message_bytes(message)
        sender, recipients = _envelope(data, mail_from, to)
        refused: dict[str, tuple[int, str]] = {}
        with smtplib.SMTP(self.host, self.port, timeout=SMTP_TIMEOUT) as client:
            client.ehlo("test.client")
            code, text = client.mail(sender)
            if code != 250:
                return Reply(code, text.decode(), MappingProxyType(refused))
            for rcpt in recipients:
                code, text = client.rcpt(rcpt)
                if code >= 300:
                    refused[rcpt] = (code, text.decode())
            if len(refused) < len(recipients):
                code, text = client.data(data)
        return Reply(code, text.decode(), MappingProxyType(refused))

    def wait_for(
        self,
        recipient: str | None = None,
        *,
        sender: str | None = None,
        rule: str | None = None,
        count: int = 1,
        timeout: float = 10.0,
    ) -> list[Received]:
        """Wait until ``count`` matching messages are fully processed.

        Background (``Event``) Lambda handlers count: a message is done when
        they have all returned. ``recipient`` is an address or a domain.
        Returns the matching messages, oldest first; raises TimeoutError,
        naming what did arrive, when time runs out.
        """
        query = Query(recipient=recipient, sender=sender, rule=rule)
        enough, done = self._call(
            self.server.mailbox.wait(query, count, timeout), timeout + 10
        )
        found = [self._received(entry) for entry in done]
        if not enough:
            wanted = ", ".join(
                f"{name}={value}"
                for name, value in (
                    ("recipient", recipient),
                    ("sender", sender),
                    ("rule", rule),
                )
                if value
            )

            busy = self._on_loop(self.server.mailbox.pending, query)
            still = f"; {busy} more still running background handlers" if busy else ""
            raise TimeoutError(
                f"waited {timeout:g} s for {count} message(s)"
                f"{' (' + wanted + ')' if wanted else ''}; {len(found)} done: "
                + (", ".join(f"{m.id} {m.reply!r}" for m in found) or "none")
                + still
            )
        return found

    def messages(self, recipient: str | None = None) -> list[Received]:
        """Return the processed messages, oldest first."""
        query = Query(recipient=recipient)
        entries = self._on_loop(lambda: list(self.server.mailbox.newest(query)))
        return [self._received(entry) for entry in reversed(entries)]

    def objects(
        self, bucket: str, prefix: str = "", setup_notifications: bool = False
    ) -> dict[str, bytes]:
        """Return the objects of a bucket under ``prefix``, by key.

        Local folders and buckets on an S3-compatible store alike. SES's
        AMAZON_SES_SETUP_NOTIFICATION objects are left out unless asked
        for; code that reads a real bucket must skip them itself.
        """

        async def read() -> dict[str, bytes]:
            buckets = self.server.buckets
            return {
                key: await buckets.get_object(bucket, key)
                for key in await buckets.list_keys(bucket, prefix)
                if setup_notifications or key.rpartition("/")[2] != SETUP_KEY
            }

        return self._call(read())

    def invocations(self, function: str | None = None) -> list[dict[str, Any]]:
        """Return the Lambda calls made so far, oldest first."""

        return self._on_loop(
            lambda: [
                invocation.as_dict()
                for invocation in self.server.lambdas.invocations
                if function is None or invocation.function_name == function
            ]
        )

    def traces(self) -> list[dict[str, Any]]:
        """Return the trace of every processed message, oldest first."""
        return [message.trace for message in self.messages()]

    def reset(self) -> None:
        """Forget every message and empty the data folder, as DELETE does."""
        self._call(self.server.clear())

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Wait until no background handler runs; say whether none does."""
        return self._thread.wait_idle(timeout)

    def dkim_sign(
        self, message: bytes | str | EmailMessage, domain: str, selector: str = "sesrx"
    ) -> bytes:
        """Sign ``message`` for ``domain`` and publish the key in the server's DNS.

        The key is RSA-2048 (one per test process); its public half goes in
        the offline zone as ``<selector>._domainkey.<domain>``, so the
        message verifies (PASS). Change a byte of the body after signing
        for a FAIL.
        """
        self._publish(f"{selector}._domainkey.{domain}".lower(), dkim_record())
        return dkim_sign(message, domain, selector)

    def _publish(self, name: str, record: str) -> None:
        server = self.server
        config = server.config
        if config.dns_txt.get(name) == record:
            return
        zone = MappingProxyType({**config.dns_txt, name: record})
        self._call(server.apply(dataclasses.replace(config, dns_txt=zone)))

    def _received(self, entry: Entry) -> Received:
        return Received(
            id=entry.message_id,
            mail_from=entry.mail_from,
            recipients=entry.recipients,
            subject=entry.subject,
            reply=entry.reply,
            rules=entry.rules,
            received_at=entry.received_at,
            _server=self,
        )

    def _call(self, coroutine: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        return self._thread.call(coroutine, timeout)

    def _on_loop(self, function: Callable[..., T], *args: Any) -> T:
        """Call ``function`` on the server's loop, where its state changes."""

        async def call() -> T:
            return function(*args)

        return self._call(call())


def _load(
    config: Config | Mapping[str, Any] | Path | str | None, base_dir: Path
) -> Config:
    if config is None:
        return load_default_config()
    if isinstance(config, Config):
        return config
    if isinstance(config, Mapping):
        return load_document(dict(config), base_dir, "sesrx_config")
    path = Path(config)
    return load_config(path if path.is_absolute() else base_dir / path)


def _envelope(
    data: bytes, mail_from: str | None, to: str | list[str] | tuple[str, ...] | None
) -> tuple[str, list[str]]:
    headers = BytesHeaderParser().parsebytes(data)
    if mail_from is None:
        mail_from = parseaddr(str(headers.get("From", "")))[1]
    if to is None:
        fields = [
            str(value) for name in ("To", "Cc") for value in headers.get_all(name, [])
        ]
        recipients = [address for _, address in getaddresses(fields) if address]
    else:
        recipients = [to] if isinstance(to, str) else list(to)
    if not recipients:
        raise ValueError("no recipients: give to= or a To or Cc header")
    return mail_from, recipients


def message_bytes(message: bytes | str | EmailMessage) -> bytes:
    """Return a message as it goes over SMTP.

    An ``EmailMessage`` or text gets CRLF line ends (the email package's
    default policy writes LF); bytes go as they are, bare LF and all.
    """
    if isinstance(message, EmailMessage):
        return message.as_bytes(policy=message.policy.clone(linesep="\r\n"))
    if isinstance(message, str):
        lines = message.replace("\r\n", "\n").split("\n")
        return "\r\n".join(lines).encode("utf-8")
    return message


def dkim_sign(
    message: bytes | str | EmailMessage, domain: str, selector: str = "sesrx"
) -> bytes:
    """Return ``message`` signed with this process's RSA-2048 DKIM key.

    The message is taken as :meth:`Sesrx.send` takes it. The key's TXT
    record is :func:`dkim_record`, to be published as
    ``<selector>._domainkey.<domain>``.
    """
    data = message_bytes(message)
    private, _ = _rsa_key()
    present = {key.lower() for key in BytesHeaderParser().parsebytes(data)}
    signed = [
        name.encode()
        for name in ("From", "To", "Cc", "Subject", "Date", "Message-ID")
        if name.lower() in present
    ]
    signature: bytes = dkim.sign(
        data,
        selector.encode("ascii"),
        domain.encode("ascii"),
        private,
        include_headers=signed,
    )
    return signature + data


def dkim_record() -> str:
    """Return the DKIM TXT record of the key :func:`dkim_sign` uses."""
    return f"v=DKIM1; k=rsa; p={_rsa_key()[1]}"


@functools.cache
def _rsa_key() -> tuple[bytes, str]:
    """Return a private key (PEM) and its public half for a DKIM record."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, base64.b64encode(public).decode("ascii")
