"""The pages in a real browser: Debian's Chromium driven by Playwright, against the application
served over real HTTP on a loopback port, with JavaScript turned off (every page must work
without it). Screenshots go to the test's directory; with UPDATE_SCREENSHOTS=1 they replace
the ones in docs/screenshots/ that the README shows."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest
from web_support import PASSWORD, Site, make_app
from werkzeug.serving import make_server

from gateway.store import EventKind, Mode
from signed_sender import sign
from webopt.services import EXTENSION

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
DOCS_SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


@pytest.fixture
def served(site: Site) -> Iterator[str]:
    """The application on werkzeug's server in a thread, on a free loopback port; its base URL."""
    app = make_app(site.config)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(5)
        server.server_close()
        app.extensions[EXTENSION].close()


@pytest.fixture
def browser(require_component: Callable[[str, str], NoReturn]) -> Iterator[Any]:
    if not CHROMIUM.exists():
        require_component("Chromium", f"{CHROMIUM} is missing (Debian package chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as error:
        require_component("Playwright", f"the Python package is not installed ({error})")
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            yield instance
        finally:
            instance.close()


def _shoot(page: Any, directory: Path, name: str) -> None:
    page.screenshot(path=str(directory / name), full_page=True)
    if os.environ.get("UPDATE_SCREENSHOTS") == "1":
        DOCS_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(directory / name, DOCS_SCREENSHOTS / name)


def _some_forgeries(site: Site, login: str) -> None:
    user_id = site.store.get_user(login).id
    now = dt.datetime.now(dt.UTC)
    for days_ago, kind, reason in [(1, EventKind.WARN, "unsigned"), (3, EventKind.WARN, "unsigned"),
                                   (3, EventKind.WARN, "bad_mac"), (8, EventKind.REJECT, "unsigned"),
                                   (8, EventKind.REJECT, "unsigned"), (12, EventKind.REJECT, "expired")]:
        at = now - dt.timedelta(days=days_ago, hours=1)
        site.store.record_event(kind, reason, f"{login}@example.ac.uk", user_id=user_id, client="192.0.2.25", at=at)


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_a_user_logs_in_turns_on_testing_mode_and_reports_a_leak_in_a_real_browser(
    site: Site, served: str, browser: Any, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    _some_forgeries(site, "bob")
    context = browser.new_context(java_script_enabled=False, viewport={"width": 820, "height": 640})
    page = context.new_page()
    page.goto(served + "/")
    expect(page.get_by_role("heading", name="Log in")).to_be_visible()
    page.get_by_label("Login").fill("bob")
    page.get_by_label("Password").fill(PASSWORD)
    _shoot(page, tmp_path, "login.png")
    page.get_by_role("button", name="Log in").click()

    expect(page.get_by_role("heading", name="Your forgery protection")).to_be_visible()
    page.get_by_label("Testing").check()
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_role("status")).to_contain_text("now testing mode")
    expect(page.get_by_role("status")).to_contain_text("takes effect within a few seconds")
    assert site.store.get_user("bob").mode is Mode.TESTING
    _shoot(page, tmp_path, "protection.png")

    page.get_by_role("link", name="Report a leak").click()
    leaked = sign("bob@example.ac.uk", site.keyring, time.time(), site.policy)
    page.get_by_label("Signed address").fill(leaked)
    page.get_by_label("Where did you see it?").fill("a public bug tracker")
    page.get_by_role("button", name="Report as leaked").click()
    expect(page.get_by_role("status")).to_contain_text("is blacklisted until")
    assert site.store.is_blacklisted(leaked)
    _shoot(page, tmp_path, "leak.png")

    page.get_by_role("link", name="Forgeries").click()
    expect(page.get_by_role("img", name="Forgeries per day, last 30 days")).to_be_visible()
    _shoot(page, tmp_path, "forgeries.png")

    page.get_by_role("button", name="Log out").click()
    expect(page.get_by_role("status")).to_contain_text("You are logged out")
    context.close()


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_pages_fit_a_phone_screen_without_sideways_scrolling(site: Site, served: str, browser: Any) -> None:
    from playwright.sync_api import expect

    _some_forgeries(site, "carol")
    site.store.add_fixed_tag("carol", "a-rather-long-list-name@lists.example.org")
    context = browser.new_context(java_script_enabled=False, viewport={"width": 360, "height": 740})
    page = context.new_page()
    page.goto(served + "/login")
    page.get_by_label("Login").fill("carol")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Your forgery protection")).to_be_visible()
    for path in ("/", "/forgeries", "/leak", "/mode/full", "/admin/", "/admin/stats", "/admin/keys"):
        page.goto(served + path)
        body_width = page.evaluate("document.documentElement.scrollWidth")
        assert body_width <= 360, f"{path} is {body_width} px wide"
    context.close()
