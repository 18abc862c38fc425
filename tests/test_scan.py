"""Spam and virus verdicts: the GTUBE and EICAR test strings."""

from __future__ import annotations

import base64

import pytest

from sesrx.scan import EICAR, GTUBE, PIECE, scan

from helpers import call, make_message, read_calls, rule, rule_set, send


def attachment(content: bytes, encoding: str = "base64") -> bytes:
    body = (
        base64.encodebytes(content).decode().replace("\n", "\r\n")
        if encoding == "base64"
        else content.decode()
    )
    return (
        "From: a@sender.example\r\nTo: b@example.com\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="xx"\r\n\r\n'
        "--xx\r\nContent-Type: text/plain\r\n\r\nSee attached.\r\n"
        "--xx\r\nContent-Type: application/octet-stream\r\n"
        f"Content-Transfer-Encoding: {encoding}\r\n\r\n{body}\r\n--xx--\r\n"
    ).encode()


@pytest.mark.parametrize(
    ("raw", "spam", "virus"),
    [
        (make_message(), "PASS", "PASS"),
        (make_message(body=GTUBE.decode()), "FAIL", "PASS"),
        (attachment(EICAR), "PASS", "FAIL"),
        (attachment(GTUBE + b"\r\n" + EICAR), "FAIL", "FAIL"),
        (attachment(EICAR[:20]), "PASS", "PASS"),
        (
            attachment(EICAR).replace(
                b"Content-Transfer-Encoding: base64",
                b"Content-Transfer-Encoding:\r\n base64",
            ),
            "PASS",
            "FAIL",
        ),
    ],
)
def test_test_strings_fail_their_verdict(raw, spam, virus):
    """GTUBE makes spam FAIL and EICAR virus FAIL, plain or base64-encoded."""
    result = scan(raw)

    assert (result.spam, result.virus) == (spam, virus)


def test_raw_bytes_are_searched_whatever_the_declared_encoding():
    """A string in the raw bytes counts even where the headers say base64."""
    raw = b"Content-Transfer-Encoding: base64\r\n\r\n" + GTUBE + b"\r\n"

    assert scan(raw).spam == "FAIL"


@pytest.mark.e2e
def test_verdicts_reach_handlers_unless_scanning_is_off(write_config, serve, tmp_path):
    """Rules with scan_enabled get the verdicts; rules without get DISABLED."""
    config = write_config(
        {
            "rule_set": rule_set(
                rule("scanned", call("handlers:record")),
                rule("unscanned", call("handlers:record"), scan_enabled=False),
            )
        }
    )
    server = serve(config)

    send(server.port, attachment(EICAR))
    scanned, unscanned = [
        c["event"]["Records"][0]["ses"]["receipt"] for c in read_calls(tmp_path)
    ]

    assert scanned["spamVerdict"] == {"status": "PASS"}
    assert scanned["virusVerdict"] == {"status": "FAIL"}
    assert unscanned["spamVerdict"] == {"status": "DISABLED"}
    assert unscanned["virusVerdict"] == {"status": "DISABLED"}


@pytest.mark.parametrize("shift", [-67, -34, -1, 0])
def test_a_string_across_two_decoded_pieces_is_found(shift):
    """EICAR split by the piece boundary of a large attachment still counts."""
    # base64 lines of 76 characters and CRLF hold 57 bytes each; the first
    # piece ends after the last whole line within PIECE bytes.
    boundary = PIECE // 78 * 57
    filler = b"\0" * (boundary + shift)
    raw = attachment(filler + EICAR + b"\0" * 1000)

    assert scan(raw).virus == "FAIL"


def test_quoted_printable_and_odd_base64_lines_are_decoded():
    """QP soft breaks and base64 lines of any length are read through."""
    qp = attachment(b"", encoding="quoted-printable").replace(
        b"\r\n\r\n\r\n--xx--",
        b"\r\n\r\n" + GTUBE[:30] + b"=\r\n" + GTUBE[30:] + b"\r\n--xx--",
    )
    encoded = base64.b64encode(b"x" * 7 + EICAR)
    odd = attachment(b"", encoding="base64").replace(
        b"\r\n\r\n\r\n--xx--",
        b"\r\n\r\n"
        + b"\r\n".join(encoded[n : n + 7] for n in range(0, len(encoded), 7))
        + b"\r\n--xx--",
    )

    assert scan(qp).spam == "FAIL"
    assert scan(odd).virus == "FAIL"


@pytest.mark.parametrize("shift", [-40, -10, 0, 3])
def test_an_encoding_field_across_a_search_boundary_is_found(shift):
    """The field naming base64 is found wherever the piece boundary cuts it."""
    head = b"Subject: x\r\nMIME-Version: 1.0\r\n\r\n"
    field = b"\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    padding = b"x" * (PIECE + shift - len(head) - 2)
    raw = head + padding + field + base64.b64encode(EICAR) + b"\r\n"

    assert scan(raw).virus == "FAIL"
