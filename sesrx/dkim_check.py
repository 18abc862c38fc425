"""Verify every DKIM signature of a message against the offline DNS zone."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import dkim

from sesrx.tag_list import is_base64, parse_tags

__all__ = ["DkimResult", "SignatureResult", "verify_dkim"]

log = logging.getLogger("sesrx.dkim")


@dataclass(frozen=True, slots=True)
class SignatureResult:
    """What one DKIM-Signature header came to."""

    domain: str
    selector: str
    algorithm: str
    result: str  # pass | fail | permerror | temperror
    reason: str = ""


@dataclass(frozen=True, slots=True)
class DkimResult:
    """The message's DKIM verdict and the result of each signature."""

    verdict: str  # SES dkimVerdict.status: PASS | FAIL | GRAY
    signatures: tuple[SignatureResult, ...] = ()


UNSIGNED = DkimResult("GRAY")
# Signatures checked per message; each one canonicalises the whole body again.
MAX_SIGNATURES = 10
# Longest DKIM-Signature value checked; real ones are a few hundred bytes.
MAX_SIGNATURE_LENGTH = 16 * 1024


def verify_dkim(raw: bytes, zone: Mapping[str, str], tags: list[str]) -> DkimResult:
    """Check each signature of ``raw``; ``tags`` are their header values.

    SES's dkimVerdict is PASS when a signature verifies, FAIL when the
    message is signed but none does, and GRAY when it is not signed.
    """
    if not tags:
        return UNSIGNED

    lookup = _zone_lookup(zone)
    results = tuple(
        _verify_one(raw, index, tag, lookup)
        if index < MAX_SIGNATURES
        else _unchecked(tag)
        for index, tag in enumerate(tags)
    )
    passed = any(result.result == "pass" for result in results)
    return DkimResult("PASS" if passed else "FAIL", results)


Lookup = Callable[..., bytes | None]


def _zone_lookup(zone: Mapping[str, str]) -> Lookup:
    """Answer dkimpy's TXT queries from the zone, never from the network."""

    def lookup(name: bytes, timeout: float = 5) -> bytes | None:
        record = zone.get(name.decode("ascii", "replace").lower().rstrip("."))
        return None if record is None else record.encode("utf-8")

    return lookup


def _verify_one(
    raw: bytes, index: int, tag_list: str, lookup: Lookup
) -> SignatureResult:
    tags = parse_tags(tag_list)
    found = {
        "domain": tags.get("d", ""),
        "selector": tags.get("s", ""),
        "algorithm": tags.get("a", ""),
    }
    refusal = _precheck(tag_list, tags)
    if refusal:
        return SignatureResult(**found, result="permerror", reason=refusal)

    reasons = _Reasons()
    try:
        ok = dkim.DKIM(raw, logger=reasons).verify(idx=index, dnsfunc=lookup)
    except dkim.ValidationError as exc:
        return SignatureResult(**found, result="fail", reason=str(exc))
    except Exception as exc:  # dkimpy raises many kinds on malformed input
        return SignatureResult(**found, result="permerror", reason=str(exc))

    if ok:
        return SignatureResult(**found, result="pass")
    if reasons.errors:
        # dkimpy reports key problems (no key, a bad key, a DNS time-out)
        # through its logger and returns False.
        reason = reasons.errors[-1]
        kind = "temperror" if reason.startswith("DnsTimeoutError") else "permerror"
        return SignatureResult(**found, result=kind, reason=reason)
    return SignatureResult(**found, result="fail", reason="signature did not verify")


def _precheck(tag_list: str, tags: dict[str, str]) -> str | None:
    """Refuse, in linear time, signatures that dkimpy would take ages over.

    dkimpy checks b= and bh= with a regular expression that backtracks
    quadratically on long runs of white space before a bad character, and
    holds the interpreter lock all the while.
    """
    if len(tag_list) > MAX_SIGNATURE_LENGTH:
        return f"signature header longer than {MAX_SIGNATURE_LENGTH} characters"
    for name in ("b", "bh"):
        if not is_base64(tags.get(name, "")):
            return f"{name}= is not base64"
    return None


def _unchecked(tag_list: str) -> SignatureResult:
    tags = parse_tags(tag_list)
    return SignatureResult(
        tags.get("d", ""),
        tags.get("s", ""),
        tags.get("a", ""),
        "permerror",
        f"not checked: only the first {MAX_SIGNATURES} signatures are",
    )


class _Reasons:
    """Stand in for dkimpy's logger; keep the errors it reports."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def error(self, message: str, *args: object) -> None:
        text = message % args if args else message
        self.errors.append(text.replace("b'", "'"))
        log.debug("dkimpy: %s", text)

    def debug(self, message: str, *args: object) -> None:
        """Drop dkimpy's debug output."""

    info = warning = debug
