"""TXT records for DKIM and DMARC: the offline zone, then real DNS if asked."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import dns.exception
import dns.resolver

from sesrx.config import Config

__all__ = ["TxtRecords", "txt_records"]

TIMEOUT = 5.0


class TxtRecords(Mapping[str, str]):
    """The zone's TXT records; with ``system``, missing names go to real DNS."""

    def __init__(self, zone: Mapping[str, str], system: bool) -> None:
        self._zone = zone
        self._system = system

    def __getitem__(self, name: str) -> str:
        if name in self._zone:
            return self._zone[name]
        record = _resolve(name) if self._system else None
        if record is None:
            raise KeyError(name)
        return record

    def __iter__(self) -> Iterator[str]:
        return iter(self._zone)

    def __len__(self) -> int:
        return len(self._zone)


def txt_records(config: Config) -> Mapping[str, str]:
    """Return what DKIM and DMARC checks read TXT records from."""
    if not config.dns.system:
        return config.dns_txt
    return TxtRecords(config.dns_txt, system=True)


def _resolve(name: str) -> str | None:
    try:
        answer = dns.resolver.resolve(name, "TXT", lifetime=TIMEOUT)
    except dns.exception.DNSException:
        return None
    for record in answer:
        return b"".join(record.strings).decode("utf-8", errors="replace")
    return None
