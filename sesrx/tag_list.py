"""Read ``tag=value; tag=value`` lists, as DKIM and DMARC records write them."""

from __future__ import annotations

import re

__all__ = ["is_base64", "parse_tags"]

_TAG = re.compile(r"(?:^|;)\s*([a-z]+)\s*=\s*([^;]*)", re.IGNORECASE)
_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")


def parse_tags(text: str) -> dict[str, str]:
    """Return the tags of ``text``: names in lower case, values stripped."""
    return {name.lower(): value.strip() for name, value in _TAG.findall(text)}


def is_base64(value: str | None) -> bool:
    """Say whether ``value``, white space aside, is base64 (in linear time)."""
    return value is not None and bool(_BASE64.fullmatch(re.sub(r"\s+", "", value)))
