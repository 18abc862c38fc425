"""Reading header blocks, splitting address lists, and message ids."""

from __future__ import annotations

import base64
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sesrx.addresses import bare_address, split_addresses
from sesrx.message import (
    MAX_HEADER_BYTES,
    Header,
    header_size,
    new_message_id,
    parse_headers,
)


def test_folded_values_are_unfolded_as_ses_shows_them():
    """CRLF goes; a folding tab becomes a space; spaces are kept."""
    raw = (
        b"Content-Type: multipart/alternative; \r\n\tboundary=abc\r\n"
        b"DKIM-Signature: c=relaxed/simple;\r\n\ts=sel; d=x\r\n"
        b"Subject: one\r\n two\r\n\r\nbody\r\n"
    )

    assert parse_headers(raw) == (
        Header("Content-Type", "multipart/alternative;  boundary=abc"),
        Header("DKIM-Signature", "c=relaxed/simple; s=sel; d=x"),
        Header("Subject", "one two"),
    )


def test_names_keep_their_case_and_order():
    """Header names are kept as sent, duplicates included, in order."""
    raw = b"Message-Id: <a@b>\r\nREPLY-TO: x@y\r\nReceived: 1\r\nReceived: 2\r\n\r\n"

    assert [h.name for h in parse_headers(raw)] == [
        "Message-Id",
        "REPLY-TO",
        "Received",
        "Received",
    ]


def test_bytes_that_are_not_utf8_become_replacement_characters():
    """Latin-1 bytes in a header are not dropped: they read as U+FFFD."""
    [header] = parse_headers(b"Subject: caf\xe9 ok\r\n\r\n")

    assert header.value == "caf\ufffd ok"


@pytest.mark.parametrize(
    ("raw", "names"),
    [
        (b"From sender@x Mon Jan 1 00:00:00 2001\nFrom: a@b\n\nbody", ["From"]),
        (b"Subject: x\nthis line has no colon\nTo: y\n", ["Subject"]),
        (b"Subject : obsolete space\r\n\r\n", ["Subject"]),
        (b"", []),
        (b"\r\n\r\nonly a body", []),
        (b" leading continuation\r\nTo: y\r\n", []),
        (b"To: a\n\nX-Not-A-Header: in the body\n", ["To"]),
    ],
)
def test_odd_header_blocks(raw, names):
    """mbox lines, missing separators and LF-only messages are read sensibly."""
    assert [h.name for h in parse_headers(raw)] == names


BODY = b"".join(b"line %d, and no empty line anywhere\r\n" % n for n in range(100))


@pytest.mark.parametrize(
    ("raw", "size"),
    [
        (b"Subject: x\r\nTo: y\r\n\r\n" + BODY, 19),
        (b"\r\n" + BODY, 0),  # starts with the empty line: no header at all
        (BODY, 0),  # no field on the first line
        (b"Subject: x\r\n" + BODY, 12),  # the body starts at the first non-field
        (b"Subject: x\r\n folded\r\n\tagain\r\n" + BODY, 29),
        (b"From a@b Mon Jan 1 00:00:00 2001\r\nTo: y\r\n" + BODY, 41),
        (b"Subject: only a header, no line end", 35),
        (b"", 0),
        (b"X: y\r\n" * 1000, 1001),  # all header and past the limit
        (b"X: " + b"y" * 2000 + b"\r\n\r\nbody", 1001),
        (b"X: y\r\n" * 166 + b"Name-" + b"n" * 2000 + b": z\r\n" + BODY, 1001),
    ],
)
def test_header_size_stops_where_parsing_stops(raw, size):
    """The header block ends at the empty line or at the first line that is
    neither a field nor folded; longer than the limit reads as limit + 1."""
    assert header_size(raw, 1000) == size


LINES = st.sampled_from([b"A: b", b" c", b"", b"no colon", b"D:"])


@given(st.lists(LINES, max_size=30))
def test_header_size_agrees_with_parse_headers(lines):
    """Every field parse_headers reads lies within the size given."""
    raw = b"\r\n".join(lines) + b"\r\n"
    size = header_size(raw, 10_000)
    assert parse_headers(raw[:size]) == parse_headers(raw)


@given(st.binary(max_size=2000))
def test_any_bytes_parse_without_error(raw):
    """No input makes header parsing raise, and no value keeps a line break."""
    for header in parse_headers(raw):
        assert "\n" not in header.value
        assert "\r" not in header.value


def test_message_id_has_ses_form():
    """Ids are 40 base32hex characters decoding to 25 bytes ending in 0x01."""
    ids = {new_message_id() for _ in range(200)}

    assert len(ids) == 200
    for message_id in ids:
        assert re.fullmatch(r"[0-9a-v]{40}", message_id)
        assert base64.b32hexdecode(message_id.upper())[-1] == 1


@pytest.mark.parametrize(
    ("value", "items", "addresses"),
    [
        (
            '"Doe, John" <doe@example.com>, b@x.com',
            ['"Doe, John" <doe@example.com>', "b@x.com"],
            ["doe@example.com", "b@x.com"],
        ),
        ("undisclosed-recipients: ;", [], []),
        (
            "team: a@x.com, b@x.com;, c@y.com",
            ["a@x.com", "b@x.com", "c@y.com"],
            ["a@x.com", "b@x.com", "c@y.com"],
        ),
        (", user@aol.com", ["user@aol.com"], ["user@aol.com"]),
        (
            "a@b.com (Comment, with comma)",
            ["a@b.com (Comment, with comma)"],
            ["a@b.com"],
        ),
        (
            "alice@example.com <bob@example.com>",
            ["alice@example.com <bob@example.com>"],
            ["bob@example.com"],
        ),
        (
            '"quoted \\" comma," <q@x.com>',
            ['"quoted \\" comma," <q@x.com>'],
            ["q@x.com"],
        ),
        (
            "=?utf-8?q?J=C3=BCrgen?= <j@x.de>",
            ["=?utf-8?q?J=C3=BCrgen?= <j@x.de>"],
            ["j@x.de"],
        ),
        ("", [], []),
        (
            '"x" <a@b.com> (comment <c@d.com>)',
            ['"x" <a@b.com> (comment <c@d.com>)'],
            ["a@b.com"],
        ),
        ("a@b.com (x<y)", ["a@b.com (x<y)"], ["a@b.com"]),
        ('<"a>b"@x.example>', ['<"a>b"@x.example>'], ['"a>b"@x.example']),
        ("Unclosed <a@b.com", ["Unclosed <a@b.com"], ["a@b.com"]),
        (
            "Pete(A nice \\) chap) <pete(his account)@silly.test(his host)>",
            ["Pete(A nice \\) chap) <pete(his account)@silly.test(his host)>"],
            ["pete@silly.test"],
        ),
        ("a@b.com: c@d.com", ["a@b.com: c@d.com"], ["a@b.com: c@d.com"]),
    ],
)
def test_address_lists(value, items, addresses):
    """Lists split at top-level commas; names and quoting stay as written."""
    assert split_addresses(value) == items
    assert [bare_address(item) for item in items] == addresses


@given(st.text(max_size=300))
def test_address_splitting_never_raises(value):
    """Any header text splits into stripped, non-empty items."""
    for item in split_addresses(value):
        assert item
        assert item == item.strip()
        bare_address(item)


def test_header_reading_stops_at_its_limit():
    """A gigantic header block is read only up to MAX_HEADER_BYTES."""
    raw = b"Subject: first\r\n" + b"X-Filler: y\r\n" * 2_000_000 + b"\r\nbody\r\n"

    headers = parse_headers(raw)

    assert headers[0] == Header("Subject", "first")
    assert len(headers) <= MAX_HEADER_BYTES // len(b"X-Filler: y\r\n") + 1


def test_splitting_takes_linear_time():
    """Thousands of colons after an address do not make splitting quadratic."""
    value = "a@example.com" + ":" * 200_000 + ", b@example.com"

    assert split_addresses(value) == ["a@example.com" + ":" * 200_000, "b@example.com"]
