"""DMARC: the From domain's policy, and whether SPF or DKIM aligns with it.

Follows RFC 7489 section 6: the record is looked up at ``_dmarc.<From
domain>``, then at the organisational domain (from the Public Suffix List,
packaged, so no network), and passes when an SPF or DKIM pass is aligned
with the From domain, relaxed or strict as ``aspf``/``adkim`` ask.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from publicsuffixlist import PublicSuffixList

__all__ = ["DmarcResult", "check_dmarc", "organizational_domain"]

_TAG = re.compile(r"(?:^|;)\s*([a-z]+)\s*=\s*([^;]*)", re.IGNORECASE)
_POLICIES = ("none", "quarantine", "reject")


@dataclass(frozen=True, slots=True)
class DmarcResult:
    """DMARC's verdict, the policy asked for when it fails, and why."""

    verdict: str  # SES dmarcVerdict.status: PASS | FAIL | GRAY | PROCESSING_FAILED
    policy: str | None = None  # none | quarantine | reject, when FAIL
    from_domain: str = ""
    result: str = "none"  # for Authentication-Results: pass | fail | none


@functools.cache
def _suffixes() -> PublicSuffixList:
    return PublicSuffixList()


def organizational_domain(domain: str) -> str:
    """Return the registrable domain: example.co.uk for a.example.co.uk."""
    return _suffixes().privatesuffix(domain.lower()) or domain.lower()


def check_dmarc(
    from_domain: str,
    spf_pass_domain: str | None,
    dkim_pass_domains: Iterable[str],
    txt: Mapping[str, str],
) -> DmarcResult:
    """Evaluate DMARC for a message whose From address is at ``from_domain``."""
    if not from_domain:
        return DmarcResult("GRAY")
    organization = organizational_domain(from_domain)
    record = txt.get(f"_dmarc.{from_domain}")
    at_organization = record is None and organization != from_domain
    if at_organization:
        record = txt.get(f"_dmarc.{organization}")
    if record is None or not record.lstrip().startswith("v=DMARC1"):
        return DmarcResult("GRAY", from_domain=from_domain)

    tags = {name.lower(): value.strip().lower() for name, value in _TAG.findall(record)}
    policy = tags.get("sp", tags.get("p")) if at_organization else tags.get("p")
    if policy not in _POLICIES:
        return DmarcResult(
            "PROCESSING_FAILED", from_domain=from_domain, result="permerror"
        )

    aligned = any(
        _aligned(domain, from_domain, tags.get(mode, "r"))
        for domain, mode in [
            *((d, "adkim") for d in dkim_pass_domains),
            *([(spf_pass_domain, "aspf")] if spf_pass_domain else []),
        ]
    )
    if aligned:
        return DmarcResult("PASS", from_domain=from_domain, result="pass")
    return DmarcResult("FAIL", policy=policy, from_domain=from_domain, result="fail")


def _aligned(domain: str, from_domain: str, mode: str) -> bool:
    domain = domain.lower().rstrip(".")
    if mode == "s":
        return domain == from_domain
    return organizational_domain(domain) == organizational_domain(from_domain)
