"""The web chat page end to end: Gradio served on 127.0.0.1, driven by Debian's headless Chromium
through Playwright (never a downloaded browser). Leaves a screenshot in test-artifacts/web_ui.png."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
from agent_catalog import agent_run

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def page_url(tmp_path_factory):
    """The chat page of a retrieval-only agent, served for the module."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is not installed (Debian package chromium)")
    pytest.importorskip("playwright.sync_api")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from agent.session import Agent
    from agent.tools import AgentContext
    from agent.web import launch_ui

    run = agent_run(tmp_path_factory)
    agent = Agent(AgentContext.open(run), None, tmp_path_factory.mktemp("web") / "chat.sqlite")
    port = free_port()
    demo = launch_ui(agent, "127.0.0.1", port, block=False)
    yield f"http://127.0.0.1:{port}/"
    demo.close()
    agent.close()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


def send(page, text: str) -> None:
    box = page.locator("#message textarea")
    box.fill(text)
    page.locator("#send").click()


def test_chat_page_shows_replies_and_item_cards(page_url, browser):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(page_url, wait_until="networkidle")
    page.wait_for_selector("#message textarea", timeout=30_000)

    send(page, "I loved Star Wars and Alien")
    page.wait_for_function("document.querySelectorAll('#cards .card').length >= 3", timeout=60_000)
    first_ids = page.locator("#cards .card").evaluate_all("els => els.map(e => e.dataset.itemId)")
    assert "1" not in first_ids and "2" not in first_ids  # never the liked items themselves
    chat = page.locator("#chat").inner_text()
    assert "Star Wars (1977) [id 1]" in chat
    assert "Tool call: recommend" in chat  # each tool call is shown as a step of the turn
    assert "Rule-based fallback" in chat  # and the reply says which path answered

    send(page, "something funnier")
    page.wait_for_function(
        f"(() => {{ const ids = [...document.querySelectorAll('#cards .card')].map(e => e.dataset.itemId);"
        f" return ids.length > 0 && !ids.includes({first_ids[0]!r}); }})()",
        timeout=60_000,
    )
    cards = page.locator("#cards .card")
    assert cards.count() >= 2
    for i in range(cards.count()):
        card = cards.nth(i)
        assert card.locator(".card-title").inner_text().strip()
        assert "Comedy" in card.locator(".card-attrs").inner_text()
        assert card.locator(".card-why").inner_text().strip()  # the explanation is on the card
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "web_ui.png"), full_page=True)
    assert (ARTIFACTS / "web_ui.png").stat().st_size > 10_000

    send(page, "why that one?")
    page.wait_for_function("document.querySelectorAll('#cards .card').length === 1", timeout=60_000)
    assert "Why " in page.locator("#chat").inner_text()
    page.close()


def test_typing_a_conversation_name_resumes_it(page_url, browser):
    page = browser.new_page()
    page.goto(page_url, wait_until="networkidle")
    page.wait_for_function(
        "document.querySelector('#thread textarea, #thread input').value.startsWith('web-')", timeout=30_000
    )
    thread = page.locator("#thread textarea, #thread input").first
    name = thread.input_value()
    send(page, "I loved Fargo")
    page.wait_for_function("document.querySelectorAll('#cards .card').length >= 1", timeout=60_000)

    other = browser.new_page()
    other.goto(page_url, wait_until="networkidle")
    other.wait_for_function(
        "document.querySelector('#thread textarea, #thread input').value.startsWith('web-')", timeout=30_000
    )
    box = other.locator("#thread textarea, #thread input").first
    box.fill(name)
    box.press("Enter")
    other.wait_for_function("document.querySelector('#chat').innerText.includes('Fargo (1996) [id 9]')", timeout=30_000)
    assert other.locator("#cards .card").count() >= 1
    page.close()
    other.close()
