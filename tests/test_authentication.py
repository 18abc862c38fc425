"""SPF and DMARC verdicts from the offline zone, over real SMTP.

The PROXY protocol lets each test pose as whatever client address it needs.
"""

from __future__ import annotations

import email
import email.policy
import socket

import pytest
import yaml
from test_reload import wait_for

from sesrx.dmarc_check import check_dmarc, organizational_domain

from helpers import (
    DkimKey,
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

ZONE = {
    "sender.example": "v=spf1 ip4:198.51.100.0/24 -all",
    "soft.example": "v=spf1 ip4:198.51.100.0/24 ~all",
    "_dmarc.sender.example": "v=DMARC1; p=reject; adkim=s",
    "_dmarc.other.example": "v=DMARC1; p=quarantine; sp=none",
}


def converse(port: int, client_ip: str, mail_from: str, message: bytes) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(f"PROXY TCP4 {client_ip} 127.0.0.1 40000 25\r\n".encode())
        replies = conn.makefile("rb")
        replies.readline()
        for command in (b"HELO mx.sender.example", f"MAIL FROM:<{mail_from}>".encode(),
                        b"RCPT TO:<b@example.com>", b"DATA"):  # fmt: skip
            conn.sendall(command + b"\r\n")
            replies.readline()
        conn.sendall(message + b".\r\n")
        assert replies.readline().startswith(b"250")


@pytest.fixture
def receipt_of(write_config, serve, tmp_path):
    """Send a message as a client address; return the receipt the handler got."""
    key = DkimKey(domain="sender.example")
    config = write_config(
        {
            "server": {"proxy_protocol": True},
            "dns": {"txt": {**ZONE, key.record_name: key.txt}},
            "rule_set": rule_set(rule("r", call("handlers:record"))),
        }
    )
    server = serve(config)

    def receipt(client_ip: str, mail_from: str, sender: str, signed: bool = False):
        message = make_message(sender=sender)
        converse(
            server.port, client_ip, mail_from, key.sign(message) if signed else message
        )
        return read_calls(tmp_path)[-1]["event"]["Records"][0]["ses"]["receipt"]

    return receipt


@pytest.mark.parametrize(
    ("client_ip", "mail_from", "spf"),
    [
        ("198.51.100.7", "a@sender.example", "PASS"),
        ("192.0.2.1", "a@sender.example", "FAIL"),
        ("192.0.2.1", "a@soft.example", "FAIL"),
        ("192.0.2.1", "a@nospf.example", "GRAY"),
        ("198.51.100.7", '"a@b"@sender.example', "PASS"),
    ],
)
def test_spf_verdict(receipt_of, client_ip, mail_from, spf):
    """spfVerdict follows the MAIL FROM domain's record for the client address."""
    receipt = receipt_of(client_ip, mail_from, "A <a@unrelated.example>")

    assert receipt["spfVerdict"] == {"status": spf}


def test_dmarc_passes_with_aligned_spf(receipt_of):
    """SPF passing for the From domain makes DMARC pass, with no dmarcPolicy."""
    receipt = receipt_of("198.51.100.7", "a@sender.example", "A <a@sender.example>")

    assert receipt["dmarcVerdict"] == {"status": "PASS"}
    assert "dmarcPolicy" not in receipt


def test_dmarc_fails_with_the_senders_policy(receipt_of):
    """Nothing aligned: DMARC FAIL, and dmarcPolicy is the record's p=."""
    receipt = receipt_of("192.0.2.1", "a@sender.example", "A <a@sender.example>")

    assert receipt["dmarcVerdict"] == {"status": "FAIL"}
    assert receipt["dmarcPolicy"] == "reject"


def test_dmarc_passes_with_an_aligned_dkim_signature(receipt_of):
    """A passing signature of the From domain is enough without SPF."""
    receipt = receipt_of(
        "192.0.2.1", "a@elsewhere.example", "A <a@sender.example>", True
    )

    assert receipt["dkimVerdict"] == {"status": "PASS"}
    assert receipt["dmarcVerdict"] == {"status": "PASS"}


def test_no_dmarc_record_is_gray(receipt_of):
    """A From domain without a DMARC record gets GRAY."""
    receipt = receipt_of("198.51.100.7", "a@sender.example", "A <a@nodmarc.example>")

    assert receipt["dmarcVerdict"] == {"status": "GRAY"}


def test_subdomain_policy_and_relaxed_alignment():
    """A subdomain falls back to the organisation's record and its sp=."""
    txt = {"_dmarc.other.example": "v=DMARC1; p=quarantine; sp=none"}

    failed = check_dmarc(["mail.other.example"], None, [], txt)
    relaxed = check_dmarc(["mail.other.example"], "bounce.other.example", [], txt)

    assert (failed.verdict, failed.policy) == ("FAIL", "none")
    assert relaxed.verdict == "PASS"
    assert organizational_domain("a.b.example.co.uk") == "example.co.uk"


def test_stored_object_carries_the_ses_header_block(write_config, serve, tmp_path):
    """The object has SES's headers in SES's order, with the verdicts in words."""
    config = write_config(
        {
            "server": {"proxy_protocol": True},
            "dns": {"txt": ZONE},
            "rule_set": rule_set(
                rule("scanned", store("scanned")),
                rule("unscanned", store("unscanned"), scan_enabled=False),
            ),
        }
    )
    server = serve(config)

    converse(server.port, "198.51.100.7", "a@sender.example",
             make_message(sender="A <a@sender.example>"))  # fmt: skip
    [scanned] = stored_messages(tmp_path / "data" / "s3" / "scanned")
    [unscanned] = stored_messages(tmp_path / "data" / "s3" / "unscanned")
    block = email.message_from_bytes(scanned.read_bytes(), policy=email.policy.compat32)

    names = [name for name, _ in block.items()]
    assert names[:9] == [
        "Return-Path", "Received", "X-SES-Spam-Verdict", "X-SES-Virus-Verdict",
        "Received-SPF", "Authentication-Results", "X-SES-RECEIPT",
        "X-SES-DKIM-SIGNATURE", "From",
    ]  # fmt: skip
    spf = (
        "pass (spfCheck: domain of sender.example designates 198.51.100.7 as "
        "permitted sender) client-ip=198.51.100.7; envelope-from=a@sender.example; "
        "helo=mx.sender.example;"
    )
    assert block["Received-SPF"].replace("\r\n ", " ") == spf
    assert block["Authentication-Results"].split("\r\n ") == [
        "amazonses.com;",
        "spf=pass (spfCheck: domain of sender.example designates 198.51.100.7 as "
        "permitted sender)",
        "client-ip=198.51.100.7;",
        "envelope-from=a@sender.example;",
        "helo=mx.sender.example;",
        "dkim=none;",
        "dmarc=pass header.from=sender.example;",
    ]
    assert max(map(len, scanned.read_bytes().split(b"\r\n"))) <= 998
    assert block["X-SES-Spam-Verdict"] == "PASS"
    assert "d=amazonses.com;" in block["X-SES-DKIM-SIGNATURE"]
    assert b"X-SES-Spam-Verdict" not in unscanned.read_bytes()
    assert b"Received-SPF: pass" in unscanned.read_bytes()


def test_client_text_cannot_forge_authentication_results(write_config, serve, tmp_path):
    """A DKIM d= or From domain with spaces cannot add clauses of its own."""
    config = write_config({"rule_set": rule_set(rule("r", store("inbound")))})
    server = serve(config)
    message = (
        b"DKIM-Signature: v=1; a=rsa-sha256;"
        b" d=x.example dkim=pass header.i=@bank.example;"
        b" s=sel; h=from; bh=AAAA; b=AAAA\r\n"
        + make_message(sender="<a@evil.example spf=pass smtp.mailfrom=bank.example>")
    )

    send(server.port, message)
    [stored] = stored_messages(tmp_path / "data" / "s3" / "inbound")
    block = email.message_from_bytes(stored.read_bytes(), policy=email.policy.compat32)
    results = block["Authentication-Results"]

    assert "bank.example" not in results
    assert "dkim=fail header.i=@invalid;" in results
    assert "dmarc=none header.from=invalid;" in results


@pytest.mark.parametrize(
    ("domains", "txt", "verdict", "policy"),
    [
        # Every author counts, and the strictest failing policy wins.
        (["good.example", "bank.example"],
         {"_dmarc.good.example": "v=DMARC1; p=none",
          "_dmarc.bank.example": "v=DMARC1; p=reject"},
         "FAIL", "reject"),
        # A TXT record that is not DMARC does not stop the organisational lookup.
        (["sub.org.example"],
         {"_dmarc.sub.org.example": "hello",
          "_dmarc.org.example": "v=DMARC1; p=reject"},
         "FAIL", "reject"),
        # Tag names and the version are case-insensitive; spaces may surround "=".
        (["org.example"], {"_dmarc.org.example": "V = DMARC1 ; P=REJECT"},
         "FAIL", "reject"),
        # Internationalised domains are looked up in their ASCII form.
        (["b\u00fccher.example"],
         {"_dmarc.xn--bcher-kva.example": "v=DMARC1; p=quarantine"},
         "FAIL", "quarantine"),
        # No valid p=: none when reports are asked for, else no policy at all.
        (["org.example"], {"_dmarc.org.example": "v=DMARC1; rua=mailto:r@org.example"},
         "FAIL", "none"),
        (["org.example"], {"_dmarc.org.example": "v=DMARC1; p=bogus"}, "GRAY", None),
        # An author without a domain cannot be checked.
        ([""], {}, "GRAY", None),
    ],
)  # fmt: skip
def test_dmarc_rules_of_rfc_7489(domains, txt, verdict, policy):
    """DMARC follows RFC 7489 for authors, records, tags and policies."""
    result = check_dmarc(domains, None, [], txt)

    assert (result.verdict, result.policy) == (verdict, policy)


def test_verdicts_follow_a_zone_edited_while_running(write_config, serve, tmp_path):
    """SPF and DMARC verdicts are reached once per sender, and again once
    the configuration changes: an edited zone decides the next message."""
    document = {
        "server": {"proxy_protocol": True},
        "dns": {"txt": dict(ZONE)},
        "rule_set": rule_set(rule("r", call("handlers:record"))),
    }
    path = write_config(document)
    server = serve(path)

    def verdicts() -> tuple[str, str]:
        message = make_message(sender="A <a@sender.example>")
        converse(server.port, "198.51.100.7", "a@sender.example", message)
        receipt = read_calls(tmp_path)[-1]["event"]["Records"][0]["ses"]["receipt"]
        return receipt["spfVerdict"]["status"], receipt["dmarcVerdict"]["status"]

    assert verdicts() == ("PASS", "PASS")
    assert verdicts() == ("PASS", "PASS")

    document["dns"]["txt"]["sender.example"] = "v=spf1 -all"
    path.write_text(yaml.safe_dump(document))
    zone = lambda: server.server.config.dns_txt  # noqa: E731
    assert wait_for(lambda: zone()["sender.example"] == "v=spf1 -all")
    assert verdicts() == ("FAIL", "FAIL")
