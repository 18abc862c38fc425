"""The web page, in a real browser: Chromium driven by Playwright.

Skipped where the playwright package or /usr/bin/chromium is missing; the
policy test at the top needs neither.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from sesrx.mailbox import Entry

from helpers import BOUNCE, call, make_message, rule, rule_set, send, store

pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")
# No sandbox: CI runs as root. The rest keep Chromium off the network.
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
STOP = {"stop": {"scope": "RuleSet"}}
# Run as script, this would set window.injected.
INJECTION = "Invoice <img src=x onerror=window.injected=1> due"
LIST_REQUEST = re.compile(r"/api/messages\?")


def expect(target: Any) -> Any:
    """Playwright's expect, imported once the browser fixture has found it."""
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(target)


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """Return a headless Chromium, or skip where there is none to drive."""
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="the browser tests need the playwright package"
    )
    if not CHROMIUM.is_file():
        pytest.skip(f"the browser tests need Chromium at {CHROMIUM}")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        yield browser
        browser.close()


@pytest.fixture
def server(write_config, serve):
    """A server whose rules give every status and several action outcomes."""
    path = write_config(
        {
            "functions": {"record": "handlers:record", "slow": "handlers:slow"},
            "rule_set": rule_set(
                rule("gone", BOUNCE, recipients=["gone@example.com"]),
                rule("archive", store("inbound", object_key_prefix="in")),
                rule("off", store("never"), enabled=False),
                rule("later", call("slow", "Event"), recipients=["later@example.com"]),
                rule("audit", call("record"), STOP, store("late")),
                rule("after", store("after")),
            ),
        }
    )
    return serve(path)


@dataclass
class Tab:
    """An open page, with its script errors and the requests it made."""

    page: Any
    base: str
    errors: list[str] = field(default_factory=list)
    started: list[str] = field(default_factory=list)
    finished: list[str] = field(default_factory=list)

    def settle(self) -> None:
        """Wait until the page has no list request in flight."""
        for _ in range(250):
            if _lists(self.started) == _lists(self.finished):
                return
            self.page.wait_for_timeout(20)
        raise AssertionError("the page kept listing messages")


def _lists(urls: list[str]) -> int:
    return sum(1 for url in urls if LIST_REQUEST.search(url))


@pytest.fixture
def open_page(chromium) -> Iterator[Callable[..., Tab]]:
    """Return a factory that opens the page of a server; checks it after."""
    opened: list[Tab] = []

    def open_(server: Any, fragment: str = "") -> Tab:
        page = chromium.new_page(viewport={"width": 1400, "height": 900})
        tab = Tab(page, f"http://127.0.0.1:{server.server.api_port}")
        page.on("pageerror", lambda error: tab.errors.append(str(error)))
        page.on("request", lambda request: tab.started.append(request.url))
        page.on("requestfinished", lambda request: tab.finished.append(request.url))
        page.on("requestfailed", lambda request: tab.finished.append(request.url))
        opened.append(tab)
        page.goto(f"{tab.base}/{fragment}")
        expect(page.get_by_test_id("connection")).to_have_text("live")
        return tab

    yield open_
    for tab in opened:
        tab.page.close()
        assert tab.errors == []
        outside = [url for url in tab.started if not url.startswith(tab.base)]
        assert outside == [], "the page must load nothing from elsewhere"


def test_page_policy_allows_only_its_own_script_and_style():
    """The page's Content-Security-Policy names the hashes of its two blocks."""
    html = resources.files("sesrx").joinpath("web/index.html").read_text("utf-8")

    def digest(tag: str) -> str:
        (body,) = re.findall(rf"<{tag}>(.*?)</{tag}>", html, re.DOTALL)
        value = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
        return f"'sha256-{value}'"

    policy = (
        f"default-src 'none'; script-src {digest('script')}; "
        f"style-src {digest('style')}; connect-src 'self'; img-src 'self' data:; "
        "base-uri 'none'; form-action 'none'"
    )
    assert f'content="{policy}"' in html, f"set the page's policy to: {policy}"


def test_a_message_appears_live_and_opens_with_its_rule_path(server, open_page):
    """A new message's row appears without a reload; its view shows the rules."""
    tab = open_page(server)
    page = tab.page
    expect(page.get_by_test_id("empty")).to_be_visible()
    tab.settle()
    # From here the list can only change through the event stream.
    page.route(LIST_REQUEST, lambda route: route.abort())
    page.evaluate("window.notReloaded = true")

    sent = send(server.port, make_message(subject=INJECTION), ["bob@example.com"])

    rows = page.get_by_test_id("message-row")
    expect(rows).to_have_count(1)
    assert page.evaluate("window.notReloaded") is True
    expect(rows.get_by_test_id("row-subject")).to_have_text(INJECTION)
    expect(rows.get_by_test_id("row-reply")).to_have_text(f"250 OK {sent.message_id}")
    expect(rows.get_by_test_id("row-reply")).to_have_class("r2")
    expect(page.get_by_test_id("count")).to_have_text("1 message")

    rows.first.click()
    expect(page).to_have_url(re.compile(f"#{sent.message_id}$"))
    expect(page.get_by_test_id("detail-subject")).to_have_text(INJECTION)
    expect(page.get_by_test_id("detail-reply")).to_have_text(
        f"250 OK {sent.message_id}"
    )

    rules = page.get_by_test_id("rule")
    expect(rules.get_by_test_id("rule-name")).to_have_text(
        ["gone", "archive", "off", "later", "audit", "after"]
    )
    expect(rules.get_by_test_id("rule-status")).to_have_text(
        ["skipped", "matched", "disabled", "skipped", "matched", "not reached"]
    )
    archive = page.locator("[data-testid=rule][data-name=archive]")
    expect(archive.get_by_test_id("rule-recipients")).to_have_text(
        "for bob@example.com"
    )
    expect(archive.get_by_test_id("action-detail")).to_have_text(
        f"s3://inbound/in/{sent.message_id}"
    )
    audit = page.locator("[data-testid=rule][data-name=audit]").get_by_test_id("action")
    assert audit.evaluate_all("rows => rows.map(row => row.dataset.type)") == [
        "Lambda",
        "Stop",
        "S3",
    ]
    expect(audit.get_by_test_id("action-outcome")).to_have_text(
        ["ok", "ok", "not reached"]
    )
    expect(audit.first.get_by_test_id("action-detail")).to_contain_text(
        "record (RequestResponse)"
    )
    expect(audit.nth(1)).to_contain_text("STOP_RULE_SET")

    expect(page.get_by_test_id("verdicts").locator(".badge")).to_have_text(
        ["SPF GRAY", "DKIM GRAY", "DMARC GRAY", "SPAM PASS", "VIRUS PASS"]
    )
    expect(page.get_by_test_id("envelope")).to_contain_text("client.example")
    expect(page.get_by_test_id("raw")).to_contain_text(f"Subject: {INJECTION}")
    expect(page.get_by_test_id("event-link")).to_have_attribute(
        "href", f"/api/messages/{sent.message_id}/event"
    )

    # The subject stayed text everywhere it is shown.
    assert page.locator("img").count() == 0
    assert page.evaluate("window.injected") is None


def test_a_row_changes_when_its_background_handler_ends(server, open_page):
    """A message whose Event handler runs (1.5 s) reads running, then done."""
    tab = open_page(server)
    page = tab.page
    tab.settle()
    send(server.port, make_message(), ["later@example.com"])

    state = page.get_by_test_id("row-state")
    expect(state).to_have_text("running")
    page.get_by_test_id("message-row").click()
    later = page.locator("[data-testid=rule][data-name=later]")
    expect(later.get_by_test_id("action-outcome")).to_have_text("started")

    expect(state).to_have_text("done")
    expect(later.get_by_test_id("action-outcome")).to_have_text("ok")


def test_a_link_to_a_message_opens_it(server, open_page):
    """Opening the page at #<id> shows that message; another #<id> switches."""
    first = send(server.port, make_message(subject="first"), ["bob@example.com"])
    second = send(server.port, make_message(subject="second"), ["gone@example.com"])
    assert second.code == 550
    page = open_page(server, f"#{first.message_id}").page

    expect(page.get_by_test_id("detail-subject")).to_have_text("first")
    expect(page.locator("tr.selected")).to_have_attribute("data-id", first.message_id)

    newest = page.get_by_test_id("message-row").first
    expect(newest.get_by_test_id("row-reply")).to_have_class("r5")
    newest.click()
    expect(page.get_by_test_id("detail-subject")).to_have_text("second")
    expect(page.get_by_test_id("detail-reply")).to_have_text(
        "550 5.1.1 Mailbox does not exist"
    )


def test_the_filter_and_clear(server, open_page):
    """The filter asks the server and holds for live rows; Clear empties all."""
    send(server.port, make_message(), ["bob@example.com"])
    send(server.port, make_message(), ["carol@other.example"])
    tab = open_page(server)
    page = tab.page
    rows = page.get_by_test_id("message-row")
    expect(rows).to_have_count(2)

    page.get_by_test_id("filter").fill("other.example")
    expect(rows).to_have_count(1)
    expect(page.get_by_test_id("count")).to_have_text("1 message for other.example")
    tab.settle()
    send(server.port, make_message(subject="elsewhere"), ["bob@example.com"])
    send(server.port, make_message(subject="here"), ["dave@other.example"])
    expect(rows).to_have_count(2)
    expect(rows.first.get_by_test_id("row-subject")).to_have_text("here")

    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_test_id("clear").click()
    expect(rows).to_have_count(0)
    expect(page.get_by_test_id("empty")).to_be_visible()
    page.get_by_test_id("filter").fill("")
    expect(page.get_by_test_id("count")).to_have_text("0 messages")


def test_a_thousand_messages_show_a_page_at_a_time(server, open_page):
    """1000 messages arriving live leave 200 rows; "more" shows the next 200."""
    tab = open_page(server)
    page = tab.page
    tab.settle()
    start = datetime.now(UTC)

    async def arrive() -> None:
        for number in range(1000):
            moment = start + timedelta(milliseconds=number)
            entry = Entry(
                message_id=f"{number:040d}",
                received_at=moment.isoformat(timespec="milliseconds"),
                timestamp=moment.timestamp(),
                mail_from="alice@sender.example",
                recipients=("bob@example.com",),
                subject=f"number {number}",
                size=100,
                reply="250 OK",
                rules=("archive",),
            )
            server.server.mailbox.add(entry, b"")
            if number % 50 == 0:
                await asyncio.sleep(0)  # let the stream write

    server.call(arrive(), 10)

    expect(page.get_by_test_id("count")).to_have_text("1000 messages")
    rows = page.get_by_test_id("message-row")
    expect(rows).to_have_count(200)
    expect(rows.first.get_by_test_id("row-subject")).to_have_text("number 999")
    page.get_by_test_id("more").click()
    expect(rows).to_have_count(400)
    expect(rows.last.get_by_test_id("row-subject")).to_have_text("number 600")
