"""Recipient matching: address, domain and subdomain entries, plus-addressing."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sesrx.config import ReceiptRule, RuleSet
from sesrx.rules import (
    REPLY_NO_MAILBOX,
    REPLY_TLS_REQUIRED,
    entry_matches,
    is_verified,
    matched_recipients,
    recipient_reply,
    rule_recipients,
)

label = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?", fullmatch=True)
domains = st.lists(label, min_size=2, max_size=4).map(".".join)
locals_ = st.from_regex(r"[a-z0-9._]{1,12}", fullmatch=True)


@pytest.mark.parametrize(
    ("entry", "address", "expected"),
    [
        ("user@example.com", "user@example.com", True),
        ("user@example.com", "USER@Example.COM", True),
        ("user@example.com", "user+tag@example.com", True),
        ("user@example.com", "user+@example.com", True),
        ("user@example.com", "username@example.com", False),
        ("user@example.com", "user@sub.example.com", False),
        ("user+tag@example.com", "user+tag@example.com", True),
        ("user+tag@example.com", "user@example.com", False),
        ("user+tag@example.com", "user+other@example.com", False),
        ("example.com", "anyone@example.com", True),
        ("example.com", "anyone@sub.example.com", False),
        ("example.com", "anyone@notexample.com", False),
        (".example.com", "anyone@sub.example.com", True),
        (".example.com", "anyone@a.b.example.com", True),
        (".example.com", "anyone@example.com", False),
        (".example.com", "anyone@badexample.com", False),
    ],
)
def test_entry_forms(entry, address, expected):
    """Each recipient entry form covers exactly the addresses SES documents."""
    assert entry_matches(entry, address) is expected


@given(local=locals_, domain=domains, data=st.data())
def test_matching_ignores_letter_case(local, domain, data):
    """Changing the letter case of an address never changes whether it matches."""
    address = f"{local}@{domain}"
    shouted = "".join(
        data.draw(st.sampled_from([c.lower(), c.upper()])) for c in address
    )

    for entry in (address, domain, "." + domain.split(".", 1)[1]):
        assert entry_matches(entry, address) == entry_matches(entry, shouted)


@given(local=locals_, domain=domains, sub=label)
def test_domain_and_subdomain_entries_are_disjoint(local, domain, sub):
    """An address matches example.com or .example.com, never both."""
    for address in (f"{local}@{domain}", f"{local}@{sub}.{domain}"):
        assert entry_matches(domain, address) != entry_matches("." + domain, address)


@given(local=locals_.filter(lambda s: "+" not in s), tag=locals_, domain=domains)
def test_plus_tag_reaches_the_plain_address_rule(local, tag, domain):
    """A rule for user@domain also receives user+tag@domain."""
    assert entry_matches(f"{local}@{domain}", f"{local}+{tag}@{domain}")


def test_verified_domains_include_subdomains():
    """A verified domain covers its subdomains; no list means everything."""
    verified = ("example.com",)

    assert is_verified("a@example.com", verified)
    assert is_verified("a@mail.example.com", verified)
    assert not is_verified("a@example.org", verified)
    assert not is_verified("a@badexample.com", verified)
    assert is_verified("a@anything.test", None)


def test_empty_recipient_list_covers_verified_domains_only():
    """A rule with no recipients matches addresses of verified domains only."""
    rule = ReceiptRule(name="all")

    got = rule_recipients(
        rule, ("a@example.com", "b@x.example.com", "c@other.org"), ("example.com",)
    )

    assert got == ("a@example.com", "b@x.example.com")


def test_recipient_reply():
    """RCPT is refused when no enabled rule matches, or TLS is required but absent."""
    rules = RuleSet(
        "set",
        (
            ReceiptRule(name="off", enabled=False, recipients=("off@example.com",)),
            ReceiptRule(
                name="tls", recipients=("vault@example.com",), tls_policy="Require"
            ),
            ReceiptRule(name="open", recipients=("example.com",)),
        ),
    )

    assert recipient_reply(rules, None, "bob@example.com", tls=False) is None
    assert (
        recipient_reply(rules, None, "off@elsewhere.com", tls=False) == REPLY_NO_MAILBOX
    )
    assert (
        recipient_reply(rules, None, "vault@example.com", tls=False)
        == REPLY_TLS_REQUIRED
    )
    assert recipient_reply(rules, None, "vault@example.com", tls=True) is None
    assert (
        recipient_reply(rules, ("example.org",), "bob@example.com", tls=False)
        == REPLY_NO_MAILBOX
    )


small_label = st.sampled_from(["a", "b", "example", "mail", "x-y"])
small_domain = st.lists(small_label, min_size=1, max_size=3).map(".".join)
small_local = st.sampled_from(["bob", "bob+tag", "alice", "b+", "+x", "Bob"])
entry = st.one_of(
    st.builds(lambda local, domain: f"{local}@{domain}", small_local, small_domain),
    small_domain,
    small_domain.map(lambda domain: "." + domain),
)


@given(
    entries=st.lists(st.lists(entry, max_size=4), min_size=1, max_size=8),
    addresses=st.lists(
        st.builds(lambda local, domain: f"{local}@{domain}", small_local, small_domain)
        | small_domain,
        max_size=6,
    ),
    verified=st.none() | st.lists(small_domain, max_size=2).map(tuple),
)
def test_the_index_matches_as_every_rule_would_one_by_one(entries, addresses, verified):
    """matched_recipients gives what rule_recipients gives for each rule."""
    rules = tuple(
        ReceiptRule(name=f"r{n}", recipients=tuple(e.lower() for e in group))
        for n, group in enumerate(entries)
    )
    rule_set = RuleSet(name="s", rules=rules)
    recipients = tuple(addresses)

    assert matched_recipients(rule_set, recipients, verified) == [
        rule_recipients(rule, recipients, verified) for rule in rules
    ]
