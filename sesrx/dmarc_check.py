"""DMARC: the From domain's policy, and whether SPF or DKIM aligns with it.

Follows RFC 7489 section 6: the record is looked up at ``_dmarc.<From
domain>``, then at the organisational domain (from the Public Suffix List,
packaged, so no network), and passes when an SPF or DKIM pass is aligned
with the From domain, relaxed or strict as ``aspf``/``adkim`` ask.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from publicsuffixlist import PublicSuffixList

from sesrx.tag_list import parse_tags

__all__ = ["DmarcResult", "check_dmarc", "organizational_domain"]

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


def load_suffix_list() -> None:
    """Parse the Public Suffix List now (a quarter of a second, once).

    Called on a worker thread at start, so that the first message to need
    it does not hold the event loop meanwhile.
    """
    _suffixes()


@functools.lru_cache(maxsize=4096)  # the same few domains, message after message
def organizational_domain(domain: str) -> str:
    """Return the registrable domain: example.co.uk for a.example.co.uk."""
    return _suffixes().privatesuffix(domain.lower()) or domain.lower()


def check_dmarc(
    from_domains: list[str],
    spf_pass_domain: str | None,
    dkim_pass_domains: Iterable[str],
    txt: Mapping[str, str],
) -> DmarcResult:
    """Evaluate DMARC for every author domain; the strictest result wins."""
    results = [
        _check_one(_a_label(domain), spf_pass_domain, list(dkim_pass_domains), txt)
        for domain in from_domains or [""]
    ]
    failed = [r for r in results if r.verdict == "FAIL"]
    if failed:
        return max(failed, key=lambda r: _POLICIES.index(r.policy or "none"))
    for verdict in ("PROCESSING_FAILED", "GRAY"):
        for result in results:
            if result.verdict == verdict:
                return result
    return results[0]


def _check_one(
    from_domain: str,
    spf_pass_domain: str | None,
    dkim_pass_domains: list[str],
    txt: Mapping[str, str],
) -> DmarcResult:
    if not from_domain or "." not in from_domain:
        return DmarcResult("GRAY", from_domain=from_domain)
    organization = organizational_domain(from_domain)
    tags = _record(txt.get(f"_dmarc.{from_domain}"))
    at_organization = tags is None and organization != from_domain
    if at_organization:
        tags = _record(txt.get(f"_dmarc.{organization}"))
    if tags is None:
        return DmarcResult("GRAY", from_domain=from_domain)

    policy = tags.get("sp", tags.get("p")) if at_organization else tags.get("p")
    if policy not in _POLICIES:
        # Without a valid p=, a record with a report address means p=none;
        # otherwise there is no usable policy (RFC 7489 section 6.6.3).
        if "rua" not in tags:
            return DmarcResult("GRAY", from_domain=from_domain)
        policy = "none"

    modes = ((d, "adkim") for d in dkim_pass_domains)
    spf = [(spf_pass_domain, "aspf")] if spf_pass_domain else []
    if any(_aligned(d, from_domain, tags.get(mode, "r")) for d, mode in [*modes, *spf]):
        return DmarcResult("PASS", from_domain=from_domain, result="pass")
    return DmarcResult("FAIL", policy=policy, from_domain=from_domain, result="fail")


def _record(text: str | None) -> dict[str, str] | None:
    """Return the tags of a DMARC record, or None if the text is not one."""
    if text is None:
        return None
    tags = {name: value.lower() for name, value in parse_tags(text).items()}
    return tags if tags.get("v") == "dmarc1" else None


@functools.lru_cache(maxsize=4096)
def _a_label(domain: str) -> str:
    """Return the ASCII form DNS uses for an internationalised domain."""
    domain = domain.lower().rstrip(".")
    try:
        return domain.encode("idna").decode("ascii")
    except UnicodeError:
        return domain


def _aligned(domain: str, from_domain: str, mode: str) -> bool:
    domain = _a_label(domain)
    if mode == "s":
        return domain == from_domain
    return organizational_domain(domain) == organizational_domain(from_domain)
