"""The DATA reader: lines into one buffer, dots un-stuffed, limits applied."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sesrx.data_reader import read_data


def read(data: bytes, size_limit: int | None = None, line_limit: int = 1000):
    async def run():
        reader = asyncio.StreamReader(limit=1001)  # aiosmtpd's
        reader.feed_data(data)
        reader.feed_eof()
        return await read_data(reader, size_limit, line_limit)

    return asyncio.run(run())


def test_lines_are_joined_and_dots_unstuffed():
    result = read(b"Subject: a\r\n\r\n..leading dot\r\n.\r\n")

    assert result.content == b"Subject: a\r\n\r\n.leading dot\r\n"
    assert not result.too_long
    assert not result.too_much


@pytest.mark.parametrize(
    ("end", "kept"),
    [
        (b"\n.\n", b"\n.\n"),
        (b"\r.\r\n", b"\r.\r\n"),
        (b"\n.\r\n", b"\n.\r\n"),
        (b"\r\n.\r", b"\r\n\r"),  # a line starting with a dot loses it
    ],
)
def test_only_a_lone_dot_between_crlfs_ends_the_data(end, kept):
    result = read(b"one" + end + b"two\r\n.\r\n")

    assert result.content == b"one" + kept + b"two\r\n"


def test_a_line_past_the_limit_is_read_through_and_refused():
    long_line = b"x" * 5000 + b"\r\n"
    result = read(b"a\r\n" + long_line + b".\r\nb\r\n.\r\n")

    assert result.too_long
    assert result.content == b""


def test_a_long_line_ending_in_a_dot_line_is_not_the_end():
    """A piece of a long line that looks like '.\\r\\n' does not end the data."""
    result = read(b"x" * 1001 + b".\r\n" + b"after\r\n.\r\n")

    assert result.too_long


@pytest.mark.parametrize(
    ("line", "too_long"),
    [
        (b"x" * 998 + b"\r\n", False),  # 1000 bytes with its CRLF
        (b"x" * 999 + b"\r\n", True),
        (b".." + b"x" * 997 + b"\r\n", False),  # the added dot does not count
        (b".." + b"x" * 998 + b"\r\n", True),
    ],
)
def test_lines_of_1000_bytes_pass_and_longer_do_not(line, too_long):
    """RFC 5321 4.5.3.1.6: at most 1000 bytes with the CRLF, not counting a
    dot doubled for transparency."""
    assert read(b"a\r\n" + line + b".\r\n").too_long is too_long


def test_size_is_counted_as_sent():
    message = b"12345678\r\n" * 10  # 100 bytes
    assert not read(message + b".\r\n", size_limit=100).too_much
    assert read(message + b"x\r\n.\r\n", size_limit=100).too_much


line = st.binary(max_size=120).map(lambda b: b.replace(b"\r\n", b"\n"))


@given(st.lists(line, max_size=30))
def test_what_is_stuffed_comes_back_as_it_was(lines):
    """Dot-stuffing (RFC 5321 4.5.2) and reading are inverse."""
    original = b"".join(item + b"\r\n" for item in lines)
    stuffed = b"".join(
        (b"." + item if item.startswith(b".") else item) + b"\r\n" for item in lines
    )

    assert read(stuffed + b".\r\n").content == original
