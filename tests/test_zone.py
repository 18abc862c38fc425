"""TXT records: the offline zone first, real DNS only when asked."""

from __future__ import annotations

from sesrx import zone
from sesrx.zone import TxtRecords


def test_zone_answers_first_and_system_dns_fills_gaps(monkeypatch):
    """With resolver: system, names missing from the zone are resolved."""
    asked = []

    def resolve(name):
        asked.append(name)
        return "v=DMARC1; p=none" if name == "_dmarc.real.example" else None

    monkeypatch.setattr(zone, "_resolve", resolve)
    records = TxtRecords({"_dmarc.local.example": "v=DMARC1; p=reject"}, system=True)

    assert records.get("_dmarc.local.example") == "v=DMARC1; p=reject"
    assert records.get("_dmarc.real.example") == "v=DMARC1; p=none"
    assert records.get("_dmarc.nowhere.example") is None
    assert asked == ["_dmarc.real.example", "_dmarc.nowhere.example"]


def test_offline_zone_never_asks_dns(monkeypatch):
    """Without resolver: system, a missing name is simply missing."""
    monkeypatch.setattr(zone, "_resolve", lambda name: "asked")

    assert TxtRecords({}, system=False).get("_dmarc.any.example") is None
