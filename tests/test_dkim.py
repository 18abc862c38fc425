"""DKIM verdicts and the result of each signature, without SMTP."""

from __future__ import annotations

from sesrx.dkim_check import verify_dkim
from sesrx.message import parse_headers

from helpers import DkimKey, make_message


def check(raw: bytes, zone: dict[str, str]):
    signatures = [h.value for h in parse_headers(raw) if h.name == "DKIM-Signature"]
    return verify_dkim(raw, zone, signatures)


def test_valid_signature_passes():
    """A signature made with the key in the zone gives PASS."""
    key = DkimKey()

    result = check(key.sign(make_message()), {key.record_name: key.txt})

    assert result.verdict == "PASS"
    [signature] = result.signatures
    assert (signature.domain, signature.selector) == ("sender.example", "sel1")
    assert signature.algorithm == "ed25519-sha256"


def test_altered_body_fails_with_the_reason():
    """A body changed after signing gives FAIL, and the reason says why."""
    key = DkimKey()
    raw = key.sign(make_message()).replace(b"Hi Bob.", b"Hi Bob!")

    result = check(raw, {key.record_name: key.txt})

    assert result.verdict == "FAIL"
    assert result.signatures[0].result == "fail"
    assert "body hash mismatch" in result.signatures[0].reason


def test_missing_key_is_a_permanent_error():
    """A signature whose key is not in the zone is a permerror and a FAIL verdict."""
    result = check(DkimKey().sign(make_message()), {})

    assert result.verdict == "FAIL"
    assert result.signatures[0].result == "permerror"
    assert "missing public key" in result.signatures[0].reason


def test_one_good_signature_among_bad_ones_passes():
    """PASS needs only one signature that verifies."""
    good, unknown = DkimKey(selector="good"), DkimKey(selector="gone")
    raw = unknown.sign(good.sign(make_message()))

    result = check(raw, {good.record_name: good.txt})

    assert result.verdict == "PASS"
    assert [s.result for s in result.signatures] == ["permerror", "pass"]


def test_garbage_signature_header_does_not_raise():
    """A DKIM-Signature that is not a tag list is an error for that signature only."""
    raw = b"DKIM-Signature: \\x00nonsense;;; ===\r\n" + make_message()

    result = check(raw, {})

    assert result.verdict == "FAIL"
    assert result.signatures[0].result == "permerror"


def test_unsigned_message_is_gray():
    """No DKIM-Signature at all gives GRAY."""
    assert check(make_message(), {}).verdict == "GRAY"


def test_only_the_first_ten_signatures_are_checked():
    """Each signature costs a pass over the body, so at most ten are checked."""
    key = DkimKey()
    raw = make_message()
    for _ in range(12):
        raw = key.sign(raw)

    result = check(raw, {key.record_name: key.txt})

    assert result.verdict == "PASS"
    assert [s.result for s in result.signatures] == ["pass"] * 10 + ["permerror"] * 2
    assert result.signatures[-1].reason.startswith("not checked")


def test_signature_built_to_stall_the_verifier_is_refused_at_once():
    """A b= tag of white space ending in a bad character is a permerror, quickly."""
    padding = "".join("\r\n " + " " * 989 for _ in range(120))
    raw = (
        "DKIM-Signature: v=1; a=rsa-sha256; d=s.example; s=sel; h=from; bh=AAAA; b=A"
        + padding
        + "!\r\n"
    ).encode() + make_message()

    result = check(raw, {})

    assert result.signatures[0].result == "permerror"
    assert "longer than" in result.signatures[0].reason
    short = raw.replace(padding.encode(), b" " * 50)
    assert check(short, {}).signatures[0].reason == "b= is not base64"
