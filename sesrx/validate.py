"""Checks of single configuration values, with SES's and S3's rules."""

from __future__ import annotations

import ipaddress
import re
from ipaddress import IPv4Network, IPv6Network

from sesrx._reader import Node
from sesrx.storage import key_to_relative_path

__all__ = [
    "FUNCTION_NAME",
    "address",
    "bucket_name",
    "bucket_problem",
    "cidr",
    "dns_name",
    "domain",
    "header_name",
    "header_value",
    "ipv4",
    "ipv6",
    "key_prefix",
    "mx",
    "one_line",
    "reply_text",
    "recipient",
    "resource_name",
]

FUNCTION_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
# Receipt rule and rule set names (SES API reference, ReceiptRule.Name).
_RESOURCE_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,62}[A-Za-z0-9])?")
_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)", re.ASCII)
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_HEADER_NAME = re.compile(r"[A-Za-z0-9-]{1,50}")
_LOCAL_PART = re.compile(r"[!#-'*+\-/-9=?A-Z^-~.]+")
# An S3 key is at most 1024 bytes; SES appends "/" and a 40-character id.
_MAX_PREFIX_BYTES = 1024 - 41
# Longest file name most file systems allow.
_MAX_NAME_BYTES = 255


def resource_name(value: str, node: Node) -> str:
    """Check a rule or rule set name."""
    if not _RESOURCE_NAME.fullmatch(value):
        node.fail(
            "expected up to 64 ASCII letters, digits, '_', '-' or '.', starting "
            f"and ending with a letter or digit, got {value!r}"
        )
    return value


def domain(value: str, node: Node) -> str:
    """Check a domain name and return it in lower case."""
    name = value.strip().lower().rstrip(".")
    labels = name.split(".")
    if len(name) > 253 or len(labels) < 2 or not all(map(_LABEL.fullmatch, labels)):
        node.fail(f"expected a domain name such as example.com, got {value!r}")
    return name


def dns_name(value: str, node: Node) -> str:
    """Check a DNS owner name (underscores allowed) and lower-case it."""
    name = value.strip().lower().rstrip(".")
    if not re.fullmatch(r"[a-z0-9_-]+(\.[a-z0-9_-]+)+", name, re.ASCII):
        node.fail(
            f"expected a DNS name such as sel._domainkey.example.com, got {value!r}"
        )
    return name


def recipient(value: str, node: Node) -> str:
    """Check a rule recipient: an address, a domain, or ``.domain``."""
    entry = value.strip()
    if "@" in entry:
        return address(entry, node).lower()
    if entry.startswith("."):
        return "." + domain(entry[1:], node)
    return domain(entry, node)


def address(value: str, node: Node) -> str:
    """Check a plain ``local@domain`` address."""
    local, _, host = value.strip().rpartition("@")
    if not local or not _LOCAL_PART.fullmatch(local):
        node.fail(f"expected an address such as user@example.com, got {value!r}")
    return f"{local}@{domain(host, node)}"


def bucket_name(value: str, node: Node) -> str:
    """Check an S3 bucket name (S3 general purpose bucket naming rules)."""
    problem = bucket_problem(value)
    if problem:
        node.fail(f"{problem}, got {value!r}")
    return value


def bucket_problem(value: str) -> str | None:
    """Say what is wrong with an S3 bucket name, or None if nothing is."""
    if not _BUCKET.fullmatch(value):
        return (
            "expected a bucket name of 3 to 63 lower-case letters, digits, '.' "
            "and '-', starting and ending with a letter or digit"
        )
    if ".." in value or ".-" in value or "-." in value:
        return "a bucket name cannot have '..', '.-' or '-.'"
    if _looks_like_ipv4(value):
        return "a bucket name cannot look like an IP address"
    if value.startswith(("xn--", "sthree-")) or value.endswith(("-s3alias", "--ol-s3")):
        return "a bucket name cannot use S3's reserved prefixes or suffixes"
    return None


def _looks_like_ipv4(value: str) -> bool:
    try:
        ipaddress.IPv4Address(value)
    except ValueError:
        return False
    return True


def cidr(value: str, node: Node) -> IPv4Network | IPv6Network:
    """Check an IP address or CIDR block, IPv4 or IPv6."""
    try:
        return ipaddress.ip_network(value.strip(), strict=False)
    except ValueError:
        node.fail(
            f"expected an IP address or CIDR block such as 10.0.0.0/24, got {value!r}"
        )


def ipv4(value: str, node: Node) -> str:
    """Check an IPv4 address (an A record)."""
    try:
        return str(ipaddress.IPv4Address(value.strip()))
    except ValueError:
        node.fail(f"expected an IPv4 address, got {value!r}")


def ipv6(value: str, node: Node) -> str:
    """Check an IPv6 address (an AAAA record)."""
    try:
        return str(ipaddress.IPv6Address(value.strip()))
    except ValueError:
        node.fail(f"expected an IPv6 address, got {value!r}")


def mx(value: str, node: Node) -> str:
    """Check an MX record: ``host`` or ``preference host``."""
    parts = value.split()
    if len(parts) == 1:
        parts = ["10", *parts]
    if len(parts) != 2 or not parts[0].isdigit():
        node.fail(
            f"expected 'preference host', such as '10 mx.example.com', got {value!r}"
        )
    return f"{int(parts[0])} {dns_name(parts[1], node)}"


def key_prefix(value: str, node: Node) -> str:
    """Check an object key prefix: any text S3 accepts in a key."""
    if len(value.encode("utf-8")) > _MAX_PREFIX_BYTES:
        node.fail(f"a key prefix is at most {_MAX_PREFIX_BYTES} bytes")
    if any(ord(char) < 32 or ord(char) == 127 for char in value):
        node.fail("a key prefix cannot hold control characters")
    for folder in key_to_relative_path(value).parts:
        if len(folder.encode("utf-8")) > _MAX_NAME_BYTES:
            node.fail(
                f"the part {folder[:40]!r}... makes a folder name longer than "
                f"{_MAX_NAME_BYTES} bytes"
            )
    return value


def header_name(value: str, node: Node) -> str:
    """Check an added header's name (SES: 1 to 50 of A-Z a-z 0-9 -)."""
    if not _HEADER_NAME.fullmatch(value):
        node.fail(f"expected 1 to 50 ASCII letters, digits or '-', got {value!r}")
    return value


def header_value(value: str, node: Node) -> str:
    """Check an added header's value (SES: under 2048 characters, one line)."""
    if len(value) >= 2048:
        node.fail(f"expected under 2048 characters, got {len(value)}")
    return one_line(value, node)


def reply_text(value: str, node: Node) -> str:
    """Check text for an SMTP reply: printable ASCII on one line."""
    if not value.strip() or not all(" " <= char <= "~" for char in value):
        node.fail(f"expected printable ASCII text, as SMTP replies need, got {value!r}")
    return value


def one_line(value: str, node: Node) -> str:
    """Check that a value has no line breaks."""
    if "\r" in value or "\n" in value:
        node.fail("cannot contain CR or LF")
    return value
