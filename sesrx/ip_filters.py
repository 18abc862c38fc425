"""Receipt IP filters: which client addresses may connect at all."""

from __future__ import annotations

import ipaddress

from sesrx.config import IpFilter

__all__ = ["REPLY_BLOCKED", "is_blocked"]

# SES's reply to a blocked client is not documented; this is RFC 3463's
# "delivery not authorized" (reference section 6).
REPLY_BLOCKED = "554 5.7.1 Access denied"


def is_blocked(filters: tuple[IpFilter, ...], address: str) -> bool:
    """Say whether a client address is refused.

    An Allow filter beats a Block filter that also matches: SES's own recipe
    (block 0.0.0.0/0, allow the trusted ranges) only works that way.
    """
    if not filters:
        return False
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped

    matching = {
        f.policy for f in filters if ip.version == f.network.version and ip in f.network
    }
    return "Block" in matching and "Allow" not in matching
