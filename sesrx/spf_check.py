"""SPF for the client address and MAIL FROM (or HELO), from the offline zone.

pyspf looks names up through its module-level ``DNSLookup``; sesrx puts its
own there once, and each check names its zone through a context variable,
so servers with different zones can share a process.
"""

from __future__ import annotations

import contextvars
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import spf

from sesrx.config import DnsZone

__all__ = ["SpfResult", "check_spf"]

# pyspf's result -> SES's spfVerdict.status. GRAY stands for "no policy to
# judge by" (reference section 5); softfail is a fail the domain asked for.
_VERDICTS = {
    "pass": "PASS",
    "fail": "FAIL",
    "softfail": "FAIL",
    "neutral": "GRAY",
    "none": "GRAY",
    "temperror": "PROCESSING_FAILED",
    "permerror": "PROCESSING_FAILED",
}

_zone: contextvars.ContextVar[tuple[Mapping[str, str], DnsZone]] = (
    contextvars.ContextVar("sesrx_spf_zone")
)
_system_lookup = spf.DNSLookup


@dataclass(frozen=True, slots=True)
class SpfResult:
    """SPF's result, its explanation, and what it checked."""

    verdict: str  # SES spfVerdict.status
    result: str  # pass | fail | softfail | neutral | none | temperror | permerror
    explanation: str
    domain: str
    client_ip: str
    envelope_from: str
    helo: str


def check_spf(
    client_ip: str, mail_from: str, helo: str, txt: Mapping[str, str], zone: DnsZone
) -> SpfResult:
    """Evaluate SPF as a receiving server would (RFC 7208)."""
    # A null sender is checked by its HELO name (RFC 7208 section 2.4).
    sender = mail_from or f"postmaster@{helo}"
    local, _, domain = sender.rpartition("@")
    if "@" in local:
        # A quoted local part may hold "@"; pyspf would split at the first.
        sender = f"postmaster@{domain}"
    token = _zone.set((txt, zone))
    try:
        result, explanation = spf.check2(i=client_ip, s=sender, h=helo)
    except Exception as exc:  # pyspf raises on some malformed input
        result, explanation = "permerror", str(exc)
    finally:
        _zone.reset(token)

    return SpfResult(
        verdict=_VERDICTS.get(result, "PROCESSING_FAILED"),
        result=result,
        explanation=explanation,
        domain=sender.rpartition("@")[2],
        client_ip=client_ip,
        envelope_from=sender,
        helo=helo,
    )


def _lookup(name: str, qtype: str, *args: Any, **kwargs: Any) -> list[Any]:
    """Answer pyspf's queries in its own format, from the zone."""
    found = _zone.get(None)
    if found is None:
        return list(_system_lookup(name, qtype, *args, **kwargs))
    txt, zone = found
    key = name.lower().rstrip(".")
    answers = _answers(key, qtype, txt, zone)
    if answers is None and zone.system:
        return list(_system_lookup(name, qtype, *args, **kwargs))
    return [((name, qtype), value) for value in answers or []]


def _answers(
    key: str, qtype: str, txt: Mapping[str, str], zone: DnsZone
) -> list[Any] | None:
    """Return the zone's answers, or None when it knows nothing of the name."""
    if qtype in ("TXT", "SPF"):
        record = txt.get(key)
        return None if record is None else [(record.encode("utf-8"),)]
    if qtype == "MX":
        records = zone.mx.get(key)
        return None if records is None else [_mx(r) for r in records]
    records = {"A": zone.a, "AAAA": zone.aaaa}.get(qtype, {}).get(key)
    return None if records is None else list(records)


def _mx(record: str) -> tuple[int, str]:
    preference, host = record.split()
    return int(preference), host


spf.DNSLookup = _lookup
