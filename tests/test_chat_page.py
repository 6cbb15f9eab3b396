"""The bundled chat page (`web/chat.html`), driven in headless Chromium against real stacks.

Every page runs under a guard: a request for anything but 127.0.0.1/localhost is aborted and
fails the test, and so does a dialog (model text that ran as script) or an uncaught page error."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, Literal

import httpx
import pytest

from tests.browser import CHROMIUM

if not CHROMIUM.exists():
    pytest.skip(f"{CHROMIUM} is missing: the chat-page tests need Debian's chromium",
                allow_module_level=True)

from playwright.async_api import Browser, BrowserContext, Locator, Page, async_playwright, expect

from tests.batchkit import chat_line, jsonl
from tests.browser import Watch, guarded_page, launch
from tests.conftest import ALICE, StackFactory
from tests.fakes.openai_server import FakeOpenAI, reasoning_for, text_for
from tests.harness import ARTIFACTS, ROOT, Stack, rabbitmqctl
from tests.test_fleet import worker_holding_call

SHOTS = ARTIFACTS / "chat-page"
PAGE_FILE = ROOT / "web" / "chat.html"
OpenPage = Callable[..., Awaitable[tuple[Page, Watch]]]
Mode = Literal["queue", "direct"]

LAST_ANSWER_TEXT = """() => {
  const a = [...document.querySelectorAll('[data-testid=answer]')].pop();
  return a ? a.textContent : '';
}"""


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as p:
        b = await launch(p)
        yield b
        await b.close()


@pytest.fixture
async def open_page(browser: Browser) -> AsyncIterator[OpenPage]:
    """Open the page in a fresh guarded context; at the end, fail on anything the guard saw."""
    opened: list[tuple[BrowserContext, Watch]] = []

    async def factory(url: str, *, width: int = 1280, height: int = 800,
                      color_scheme: Literal["light", "dark"] = "light") -> tuple[Page, Watch]:
        context, page, watch = await guarded_page(browser, width=width, height=height,
                                                  color_scheme=color_scheme)
        opened.append((context, watch))
        await page.goto(url)
        return page, watch

    yield factory
    for context, _ in opened:
        # Requests still in flight (health polls) must not fail in the guard as it closes.
        await context.unroute_all(behavior="ignoreErrors")
        await context.close()
    problems = [p for _, watch in opened for p in watch.problems()]
    assert not problems, problems


def unique(label: str) -> str:
    return f"{label} {uuid.uuid4().hex[:8]}"


async def set_mode(page: Page, mode: Mode) -> None:
    # The radio itself is visually hidden behind its label, as in a segmented control.
    await page.locator("label", has=page.get_by_test_id(f"mode-{mode}")).click()
    await expect(page.get_by_test_id(f"mode-{mode}")).to_be_checked()


async def send(page: Page, text: str, *, model: str | None = None,
               mode: Mode | None = None) -> Locator:
    """Type a message and press Enter; returns the assistant message it starts."""
    if mode is not None:
        await set_mode(page, mode)
    if model is not None:
        await page.get_by_test_id("model").fill(model)
    before = await page.get_by_test_id("msg-assistant").count()
    await page.get_by_test_id("prompt").fill(text)
    await page.get_by_test_id("prompt").press("Enter")
    answer = page.get_by_test_id("msg-assistant").nth(before)
    await expect(answer).to_be_attached()
    return answer


async def finished(msg: Locator, state: str = "done", within: float = 20) -> str:
    await expect(msg).to_have_attribute("data-state", state, timeout=within * 1000)
    return await msg.get_by_test_id("answer").text_content() or ""


async def wait_partial(page: Page, full: str, within: float = 10) -> None:
    """The answer shows part of the text, but not all of it yet, while the Stream indicator
    says `streaming`: it arrives token by token."""
    await page.wait_for_function(
        """(full) => {
          const a = [...document.querySelectorAll('[data-testid=answer]')].pop();
          const t = a ? a.textContent : '';
          const stream = document.querySelector('[data-testid=status-stream]').dataset.state;
          return t.length > 0 && t.length < full.length && full.startsWith(t)
            && stream === 'streaming';
        }""", arg=full, timeout=within * 1000)


async def wait_some_text(page: Page, within: float = 10) -> None:
    await page.wait_for_function(f"() => ({LAST_ANSWER_TEXT})().length > 0",
                                 timeout=within * 1000)


async def wait_healthy(url: str, within: float) -> None:
    deadline = time.monotonic() + within
    last = ""
    async with httpx.AsyncClient(base_url=url, timeout=5) as client:
        while time.monotonic() < deadline:
            try:
                r = await client.get("/health/full")
                if r.status_code == 200:
                    return
                last = r.text
            except httpx.HTTPError as exc:
                last = repr(exc)
            await asyncio.sleep(0.25)
    raise AssertionError(f"/health/full not 200 within {within}s: {last}")


# ---------------------------------------------------------------- served, self-contained


async def test_page_is_served_self_contained_with_a_strict_csp(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.url) as client:
        for path in ("/", "/chat.html"):
            r = await client.get(path)
            assert r.status_code == 200, r.text
            assert r.headers["content-type"].startswith("text/html")
            assert r.content == PAGE_FILE.read_bytes()
            csp = r.headers["content-security-policy"]
            assert "default-src 'none'" in csp and "script-src 'sha256-" in csp, csp
            assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
        assert (await client.head("/")).status_code == 200
    html = PAGE_FILE.read_text()
    # Nothing from elsewhere: no external script, stylesheet, font or image.
    assert not re.search(r"<script[^>]+src=|<link[^>]+stylesheet|@import|url\(", html)
    hosts = {urlhost for urlhost in re.findall(r"https?://([^/:\s'\"`]+)", html)}
    assert hosts <= {"127.0.0.1", "localhost"}, hosts
    # Model text is never parsed as HTML: the page has no HTML-parsing sink at all.
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(",
                 "new Function", "createContextualFragment", "DOMParser"):
        assert sink not in html, sink


# ---------------------------------------------------------------- chat


@pytest.mark.parametrize("mode", ["queue", "direct"])
async def test_answer_streams_token_by_token(stack: Stack, fake: FakeOpenAI, open_page: OpenPage,
                                            mode: Mode) -> None:
    page, _ = await open_page(stack.url)
    prompt = unique(f"stream me in {mode} mode")
    full = text_for("ok-30-20", prompt)
    msg = await send(page, prompt, model="openai/ok-30-20", mode=mode)
    await wait_partial(page, full)
    assert await finished(msg) == full
    assert len(fake.calls_for(prompt)) == 1
    meta = msg.get_by_test_id("answer-meta")
    label = "Queue" if mode == "queue" else "Direct"
    await expect(meta).to_contain_text(label)
    await expect(meta).to_contain_text("first token")
    await expect(meta).to_contain_text("total")
    ttft = int(await meta.get_attribute("data-ttft-ms") or -1)
    total = int(await meta.get_attribute("data-total-ms") or -1)
    assert 0 <= ttft <= total, (ttft, total)
    await expect(msg.get_by_test_id("mode-tag")).to_have_text(label)
    await expect(page.get_by_test_id("status-stream")).to_have_attribute("data-state", "idle")
    # Both messages carry a timestamp.
    for who in ("msg-user", "msg-assistant"):
        time_el = page.get_by_test_id(who).last.get_by_test_id("msg-time")
        assert re.match(r"\d{4}-\d\d-\d\dT", await time_el.get_attribute("datetime") or "")
        await expect(time_el).to_have_text(re.compile(r"\d"))


async def test_mode_is_remembered_across_reloads(stack: Stack, open_page: OpenPage) -> None:
    page, _ = await open_page(stack.url)
    await expect(page.get_by_test_id("mode-queue")).to_be_checked()  # the default
    await set_mode(page, "direct")
    await page.reload()
    await expect(page.get_by_test_id("mode-direct")).to_be_checked()
    await set_mode(page, "queue")
    await page.reload()
    await expect(page.get_by_test_id("mode-queue")).to_be_checked()


async def test_conversation_is_sent_with_each_message(stack: Stack, fake: FakeOpenAI,
                                                      open_page: OpenPage) -> None:
    page, _ = await open_page(stack.url)
    await page.get_by_test_id("system").fill("Answer briefly.")
    first = unique("first turn")
    # slow-4000: 8 tokens over 4 s, so the typing indicator shows for 0.5 s before the first.
    msg = await send(page, first, model="openai/slow-4000")
    await expect(msg.get_by_test_id("typing")).to_be_visible()
    await wait_some_text(page)
    await expect(msg.get_by_test_id("typing")).to_be_hidden()
    first_answer = await finished(msg)
    assert first_answer == text_for("slow-4000", first)

    # Shift+Enter is a new line, Enter sends.
    second = unique("second turn")
    prompt = page.get_by_test_id("prompt")
    await page.get_by_test_id("model").fill("openai/ok-5-0")
    await prompt.fill(second)
    await prompt.press("Shift+Enter")
    await prompt.press_sequentially("and a second line")
    await expect(prompt).to_have_value(f"{second}\nand a second line")
    await prompt.press("Enter")
    await expect(prompt).to_have_value("")
    second = f"{second}\nand a second line"
    assert await finished(page.get_by_test_id("msg-assistant").nth(1)) == text_for("ok-5-0", second)
    [call] = fake.calls_for(second)
    assert call.body["messages"] == [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": first},
        {"role": "assistant", "content": first_answer},
        {"role": "user", "content": second},
    ]

    # New chat starts from nothing (the system prompt stays).
    await page.get_by_test_id("new-chat").click()
    await expect(page.get_by_test_id("msg-assistant")).to_have_count(0)
    third = unique("fresh start")
    await finished(await send(page, third))
    [call] = fake.calls_for(third)
    assert call.body["messages"] == [{"role": "system", "content": "Answer briefly."},
                                     {"role": "user", "content": third}]


@pytest.mark.parametrize("mode", ["queue", "direct"])
async def test_reasoning_is_shown_dimmed_and_left_out_of_the_conversation(
        stack: Stack, fake: FakeOpenAI, open_page: OpenPage, mode: Mode) -> None:
    page, _ = await open_page(stack.url)
    prompt = unique(f"reason in {mode} mode")
    model = "reason-6-50"
    msg = await send(page, prompt, model=f"openai/{model}", mode=mode)
    answer = await finished(msg)
    assert answer == text_for(model, prompt)
    thought = msg.get_by_test_id("reasoning")
    await expect(thought).to_have_text(reasoning_for(model, prompt))
    # Dimmed: the muted colour, not the answer's.
    colours = await msg.evaluate("""(m) => [m.querySelector('[data-testid=reasoning]'),
        m.querySelector('[data-testid=answer]')].map((e) => getComputedStyle(e).color)""")
    assert colours[0] != colours[1], colours
    # The thought is not sent back with the next message (DeepSeek refuses it there).
    follow = unique("after reasoning")
    await finished(await send(page, follow, model="openai/ok-3-0"))
    [call] = fake.calls_for(follow)
    assert call.body["messages"][-2] == {"role": "assistant", "content": answer}
    # An ordinary answer shows no reasoning block.
    last = page.get_by_test_id("msg-assistant").last
    await expect(last.get_by_test_id("reasoning")).to_be_hidden()


@pytest.mark.parametrize("mode", ["queue", "direct"])
async def test_stop_cancels_the_generation(stack: Stack, fake: FakeOpenAI, open_page: OpenPage,
                                           mode: Mode) -> None:
    page, _ = await open_page(stack.url)
    prompt = unique(f"never ending {mode}")
    msg = await send(page, prompt, model="openai/long", mode=mode)  # a token every 50 ms, 1 min
    await wait_some_text(page)
    await page.get_by_test_id("stop").click()
    shown = await finished(msg, "stopped")
    # The provider saw our side close its connection: the generation really stopped.
    [call] = fake.calls_for(prompt)
    await asyncio.wait_for(call.gone.wait(), timeout=15)
    assert call.finished is None
    assert shown and text_for("long", prompt).startswith(shown)
    await expect(msg.get_by_test_id("answer-meta")).to_contain_text("stopped")
    await expect(page.get_by_test_id("send")).to_be_visible()
    await expect(page.get_by_test_id("stop")).to_be_hidden()
    await expect(page.get_by_test_id("status-stream")).to_have_attribute("data-state", "idle")


async def test_model_text_is_shown_as_text_never_as_markup(stack: Stack,
                                                           open_page: OpenPage) -> None:
    page, watch = await open_page(stack.url)
    hostile = "<img src=x onerror=alert(1)> <script>alert(2)</script> **bold** `code`"
    msg = await send(page, hostile, model="mock/echo")  # answers "Echo: <message> ..."
    text = await finished(msg)
    assert text.startswith("Echo: <img src=x onerror=alert(1)> <script>alert(2)</script> bold code")
    answer = msg.get_by_test_id("answer")
    await expect(answer.locator("img, script, iframe, svg, object")).to_have_count(0)
    await expect(page.locator("#log img, #log script")).to_have_count(0)
    await expect(answer.locator("strong")).to_have_text("bold")
    await expect(answer.locator("code")).to_have_text("code")
    await expect(page.get_by_test_id("user-text")).to_have_text(hostile)

    # The renderer on its own: fences, lists, bold and code, all as text.
    src = ("Intro **strong `x`** end\n\n```html\n<script>alert(3)</script>\n"
           "<img src=x onerror=alert(4)>\n```\n- one\n- two `t`\n\n3. three\n4. four\n"
           "<b onmouseover=alert(5)>not bold</b>")
    out = await page.evaluate("""(src) => {
      const root = window.RafaleChat.renderMarkdown(src);
      document.body.append(root);  // live in the document: nothing may run or load
      const tags = [...root.querySelectorAll('*')].map(e => e.tagName);
      const r = {tags, pre: root.querySelector('pre code').textContent,
                 lang: root.querySelector('pre').dataset.lang,
                 ul: [...root.querySelectorAll('ul > li')].map(e => e.textContent),
                 ol: [...root.querySelectorAll('ol > li')].map(e => e.textContent),
                 olStart: root.querySelector('ol').start,
                 strong: root.querySelector('strong').textContent,
                 last: root.lastElementChild.textContent};
      root.remove();
      return r;
    }""", src)
    assert set(out["tags"]) <= {"P", "STRONG", "CODE", "PRE", "UL", "OL", "LI"}, out
    assert out["pre"] == "<script>alert(3)</script>\n<img src=x onerror=alert(4)>"
    assert out["lang"] == "html"
    assert out["ul"] == ["one", "two t"] and out["ol"] == ["three", "four"]
    assert out["olStart"] == 3 and out["strong"] == "strong x"
    assert out["last"] == "<b onmouseover=alert(5)>not bold</b>"
    assert watch.dialogs == []


# ---------------------------------------------------------------- faults


@pytest.mark.broker_restart
async def test_broker_down_turns_queue_red_and_queue_mode_says_503(
    make_stack: StackFactory, open_page: OpenPage
) -> None:
    stack = await make_stack("page-broker", llm_workers=1)
    page, _ = await open_page(stack.url)
    queue = page.get_by_test_id("status-queue")
    await expect(queue).to_have_attribute("data-state", "ok", timeout=15_000)
    await asyncio.to_thread(rabbitmqctl, "stop_app")
    try:
        await expect(queue).to_have_attribute("data-state", "down", timeout=30_000)
        await expect(page.get_by_test_id("status-api")).to_have_attribute("data-state", "ok")
        msg = await send(page, unique("queued while down"), model="mock/echo", mode="queue")
        await finished(msg, "error")
        error = msg.get_by_test_id("error-text")
        await expect(error).to_contain_text("503")
        await expect(error).to_contain_text("the broker is down")
        await expect(error).to_contain_text("RabbitMQ")  # the server's own message
        # As the message says, Direct mode needs no broker.
        direct = await send(page, unique("direct while down"), mode="direct")
        assert (await finished(direct)).startswith("Echo: direct while down")
    finally:
        await asyncio.to_thread(rabbitmqctl, "start_app")
        await wait_healthy(stack.url, within=90)
    await expect(queue).to_have_attribute("data-state", "ok", timeout=15_000)


async def test_page_asks_for_the_api_key_and_works_once_given(
    make_stack: StackFactory, open_page: OpenPage
) -> None:
    stack = await make_stack("page-keys", rafale_api_keys=f"alice:{ALICE}")
    page, _ = await open_page(stack.url)
    banner = page.get_by_test_id("key-banner")
    await expect(banner).to_be_visible()  # /v1/models answered 401 at load
    await expect(page.get_by_test_id("status-api")).to_have_attribute("data-state", "ok")
    # /health/full gives the page (no admin key) its status only: enough for the light.
    await expect(page.get_by_test_id("status-queue")).to_have_attribute("data-state", "ok")
    msg = await send(page, "behind a locked door", model="mock/echo")
    await finished(msg, "error")
    await expect(msg.get_by_test_id("error-text")).to_contain_text("401")
    await expect(msg.get_by_test_id("error-text")).to_contain_text("API key")

    await page.get_by_test_id("key-input").fill(ALICE)
    await page.get_by_test_id("key-save").click()
    await expect(banner).to_be_hidden()
    # The refused message is sent again with the key, through the queue (fetch streaming
    # sends the Authorization header, which EventSource could not).
    retried = page.get_by_test_id("msg-assistant").last
    assert (await finished(retried)).startswith("Echo: behind a locked door")
    await expect(page.get_by_test_id("msg-user")).to_have_count(1)
    direct = await send(page, "direct with a key", mode="direct")
    assert (await finished(direct)).startswith("Echo: direct with a key")

    # The key is kept across reloads.
    assert await page.evaluate("() => localStorage.getItem('rafale.apiKey')") == ALICE
    await page.reload()
    await expect(page.locator("#model-list option").first).to_be_attached()  # models loaded
    await expect(banner).to_be_hidden()
    await page.get_by_test_id("tab-batches").click()
    await expect(page.get_by_test_id("batch-list-msg")).to_have_text("No batches yet for this key.")


async def test_a_rate_limit_says_when_to_try_again_not_that_the_broker_is_down(
    make_stack: StackFactory, open_page: OpenPage
) -> None:
    stack = await make_stack("page-429", rafale_api_keys=f"alice:{ALICE} rpm=1")
    page, _ = await open_page(stack.url)
    await page.get_by_test_id("key-input").fill(ALICE)
    await page.get_by_test_id("key-save").click()
    first = await send(page, unique("the one this minute allows"), model="mock/echo")
    await finished(first)
    second = await send(page, unique("one too many"), model="mock/echo")
    await finished(second, "error")
    error = second.get_by_test_id("error-text")
    await expect(error).to_contain_text("429 rate_limit_exceeded")
    await expect(error).to_contain_text(re.compile(r"Try again in \d+ s"))
    await expect(error).not_to_contain_text("broker")


async def test_worker_lost_mid_answer_shows_reset_and_the_exact_text(
    make_stack: StackFactory, fake: FakeOpenAI, open_page: OpenPage
) -> None:
    stack = await make_stack("page-reset", llm_workers=2)
    page, _ = await open_page(stack.url)
    prompt = unique("outlive a worker")
    model = "ok-60-30"  # ~1.8 s of streaming
    msg = await send(page, prompt, model=f"openai/{model}", mode="queue")
    await wait_partial(page, text_for(model, prompt))
    os.kill(worker_holding_call(stack, fake), signal.SIGKILL)
    await expect(msg.get_by_test_id("notice-reset")).to_be_visible(timeout=15_000)
    await expect(msg.get_by_test_id("notice-reset")).to_contain_text("restarted")
    assert await finished(msg, within=30) == text_for(model, prompt)


async def test_dropped_stream_resumes_without_loss_or_repeat(
    make_stack: StackFactory, open_page: OpenPage
) -> None:
    stack = await make_stack("page-resume", stream_resume_grace=30)
    page, _ = await open_page(stack.url)
    prompt = unique("survive the api")
    model = "ok-60-50"  # 3 s of streaming
    msg = await send(page, prompt, model=f"openai/{model}", mode="queue")
    await wait_partial(page, text_for(model, prompt))
    # The API dies mid-answer (the session lives on in RabbitMQ) and comes back.
    api = stack.procs["api"]
    os.killpg(api.pid, signal.SIGKILL)
    await asyncio.to_thread(api.wait)
    stack.start_api()
    await stack.wait_ready()
    assert await finished(msg, within=30) == text_for(model, prompt)
    assert int(await msg.get_attribute("data-reconnects") or 0) >= 1
    await expect(msg.get_by_test_id("answer-meta")).to_contain_text("resumed")


# ---------------------------------------------------------------- layout


@pytest.mark.parametrize("scheme", ["light", "dark"])
async def test_layout_at_phone_and_desktop_widths(stack: Stack, open_page: OpenPage,
                                                  scheme: Literal["light", "dark"]) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    long_word = "https://example.invalid/" + "a" * 180  # text only: never fetched
    for width, height in ((375, 812), (1440, 900)):
        page, _ = await open_page(stack.url, width=width, height=height, color_scheme=scheme)
        phone = width < 800
        # The empty message box shows its whole placeholder: no wrap, no scrollbar.
        box = await page.get_by_test_id("prompt").evaluate(
            "(p) => [p.value, p.placeholder, p.scrollHeight, p.clientHeight]")
        assert box[0] == "" and box[1].startswith("Message") and box[2] <= box[3], box
        settings = page.get_by_test_id("settings")
        if phone:  # behind a button on a phone
            await expect(settings).to_be_hidden()
            await page.get_by_test_id("toggle-settings").click()
        await page.get_by_test_id("model").fill("mock/echo")
        if phone:
            await page.get_by_test_id("toggle-settings").click()
            await expect(settings).to_be_hidden()
        # On a phone a long unbroken word must wrap; the desktop shot is the README's.
        first = (f"A long link {long_word}" if phone else
                 "Hello Rafale! Show **bold** and `inline code`, streamed through the queue")
        await finished(await send(page, first))
        if phone:
            await page.get_by_test_id("toggle-settings").click()
        await set_mode(page, "direct")
        if phone:
            await page.get_by_test_id("toggle-settings").click()
        await finished(await send(page, "Now straight to the provider, no queue"))
        if not phone:
            stopped = await send(page, "Tell me everything", model="openai/long")
            await wait_some_text(page)
            await page.get_by_test_id("stop").click()
            await finished(stopped, "stopped")
        dims = await page.evaluate("""() => [document.documentElement.scrollWidth,
            document.documentElement.clientWidth, document.getElementById('log').scrollWidth,
            document.getElementById('log').clientWidth]""")
        assert dims[0] <= dims[1] and dims[2] <= dims[3], dims
        await page.screenshot(path=str(SHOTS / f"chat-{width}x{height}-{scheme}.png"))
        if width < 800:  # the settings panel opens above the chat, still without overflow
            await page.get_by_test_id("toggle-settings").click()
            await expect(page.get_by_test_id("settings")).to_be_visible()
            await page.screenshot(path=str(SHOTS / f"settings-{width}x{height}-{scheme}.png"))
            sw, cw = await page.evaluate("""() => [document.documentElement.scrollWidth,
                document.documentElement.clientWidth]""")
            assert sw <= cw, (sw, cw)
        await page.get_by_test_id("tab-batches").click()
        await expect(page.get_by_test_id("batch-list-msg")).to_be_attached()
        await page.screenshot(path=str(SHOTS / f"batches-{width}x{height}-{scheme}.png"))
        sw, cw = await page.evaluate("""() => [document.documentElement.scrollWidth,
            document.documentElement.clientWidth]""")
        assert sw <= cw, (sw, cw)
        bg = await page.evaluate("() => getComputedStyle(document.body).backgroundColor")
        dark = sum(int(x) for x in re.findall(r"\d+", bg)[:3]) < 200
        assert dark == (scheme == "dark"), bg


async def test_no_request_leaves_the_machine(stack: Stack, open_page: OpenPage) -> None:
    page, watch = await open_page(stack.url)
    await finished(await send(page, "stay local", model="mock/echo"))
    await page.get_by_test_id("tab-batches").click()
    await expect(page.get_by_test_id("batch-list-msg")).to_be_attached()
    assert watch.requests and all(re.match(r"http://127\.0\.0\.1:\d+/", u)
                                  for u in watch.requests), watch.requests
    assert watch.outside == []
    # The guard is live: a request elsewhere is aborted and recorded.
    result = await page.evaluate("""() => fetch('https://example.invalid/probe')
        .then(() => 'fetched', (e) => 'blocked: ' + e.message)""")
    assert result.startswith("blocked"), result
    assert watch.outside == ["https://example.invalid/probe"]
    watch.outside.clear()  # expected: the fixture fails the test on anything else


async def test_docs_render_their_operations_offline(stack: Stack, open_page: OpenPage) -> None:
    # The guard aborts and reports anything not for 127.0.0.1: FastAPI's default pages load
    # Swagger UI, ReDoc and a favicon from public CDNs, and were blank offline.
    page, watch = await open_page(f"{stack.url}/docs")
    await expect(page.locator(".opblock-summary-path", has_text="/chat/async")).to_be_visible(
        timeout=15_000)
    assert await page.locator(".opblock").count() >= 10
    assert any(u.endswith("/docs-assets/favicon.png") for u in watch.requests), watch.requests
    assert watch.outside == [], watch.outside
    # Not offered: ReDoc's bundle always loads its logo from its vendor's CDN.
    async with httpx.AsyncClient(base_url=stack.url, timeout=10) as c:
        assert (await c.get("/redoc")).status_code == 404


async def test_page_opened_from_disk_talks_to_a_rafale_url(make_stack: StackFactory,
                                                           open_page: OpenPage) -> None:
    stack = await make_stack("page-disk", cors_origins="null")  # file:// pages send Origin: null
    page, _ = await open_page(PAGE_FILE.as_uri())
    base = page.get_by_test_id("base-url")
    await expect(base).to_have_attribute("placeholder", "http://127.0.0.1:8007")
    await base.fill(stack.url)
    await base.press("Tab")
    await expect(page.get_by_test_id("status-api")).to_have_attribute("data-state", "ok")
    await expect(page.get_by_test_id("status-queue")).to_have_attribute("data-state", "ok")
    for mode in ("queue", "direct"):
        msg = await send(page, f"from disk via {mode}", model="mock/echo", mode=mode)
        assert (await finished(msg)).startswith(f"Echo: from disk via {mode}")


# ---------------------------------------------------------------- batches


async def test_batches_tab_runs_a_batch_and_downloads_its_files(
    stack: Stack, open_page: OpenPage, tmp_path: Path
) -> None:
    page, _ = await open_page(stack.url, width=1440, height=900)
    await page.get_by_test_id("tab-batches").click()
    tag = uuid.uuid4().hex[:8]

    async def run(lines: list[dict[str, Any]], total: int, failed: int) -> Locator:
        await page.get_by_test_id("batch-file").set_input_files(files=[{
            "name": f"requests-{tag}.jsonl", "mimeType": "application/jsonl",
            "buffer": jsonl(lines)}])
        await page.get_by_test_id("batch-start").click()
        started = page.get_by_test_id("batch-msg")
        await expect(started).to_contain_text("Started batch_", timeout=15_000)
        found = re.search(r"Started (batch_\S+) from", await started.text_content() or "")
        assert found, await started.text_content()
        row = page.locator(f'[data-testid=batch-row][data-batch-id="{found.group(1)}"]')
        await expect(row).to_have_attribute("data-status", "completed", timeout=60_000)
        await expect(row.get_by_test_id("batch-status")).to_have_text("completed")
        await expect(row.get_by_test_id("batch-counts")).to_have_text(
            f"{total - failed} completed · {failed} failed · {total} total")
        bar = await row.get_by_test_id("batch-progress").evaluate(
            "(p) => [p.value, p.max, p.position]")
        assert bar == [total, total, 1], bar
        return row

    async def download(row: Locator, which: str) -> list[dict[str, Any]]:
        async with page.expect_download() as info:
            await row.get_by_test_id(f"batch-download-{which}").click()
        dl = await info.value
        assert dl.suggested_filename.endswith(f"-{which}.jsonl")
        path = tmp_path / dl.suggested_filename
        await dl.save_as(path)
        return [json.loads(x) for x in path.read_text().splitlines()]

    lines = [chat_line(f"echo-{i}", f"batch line {i} {tag}") for i in range(3)]
    row = await run(lines, 3, 0)
    await expect(row.get_by_test_id("batch-download-errors")).to_be_hidden()
    out = sorted(await download(row, "output"), key=lambda x: x["custom_id"])
    assert [x["custom_id"] for x in out] == ["echo-0", "echo-1", "echo-2"]
    for i, x in enumerate(out):
        content = x["response"]["body"]["choices"][0]["message"]["content"]
        assert content.startswith(f"Echo: batch line {i} {tag}"), content

    # A line the provider refuses lands in the error file, which downloads the same way.
    lines = [chat_line("good", f"fine {tag}", model="openai/ok-3-0"),
             chat_line("bad", f"REJECT400 {tag}", model="openai/ok-3-0")]
    row = await run(lines, 2, 1)
    [good] = await download(row, "output")
    [bad] = await download(row, "errors")
    assert good["custom_id"] == "good" and bad["custom_id"] == "bad"
    assert bad["response"]["status_code"] == 400
    SHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SHOTS / "batches-run-1440x900.png"))


async def test_a_cancelled_batch_counts_what_never_ran_and_its_bar_is_not_full(
        stack: Stack, open_page: OpenPage) -> None:
    page, _ = await open_page(stack.url, width=375, height=812)
    await page.get_by_test_id("tab-batches").click()
    # ok-60-1000: a token a second for a minute, so the cancel surely comes first.
    lines = [chat_line(f"slow-{i}", f"slow {uuid.uuid4().hex}", model="openai/ok-60-1000")
             for i in range(2)]
    await page.get_by_test_id("batch-file").set_input_files(files=[{
        "name": "slow.jsonl", "mimeType": "application/jsonl", "buffer": jsonl(lines)}])
    await page.get_by_test_id("batch-start").click()
    started = page.get_by_test_id("batch-msg")
    await expect(started).to_contain_text("Started batch_", timeout=15_000)
    found = re.search(r"Started (batch_\S+) from", await started.text_content() or "")
    assert found
    row = page.locator(f'[data-testid=batch-row][data-batch-id="{found.group(1)}"]')
    await row.get_by_test_id("batch-cancel").click()
    await expect(row).to_have_attribute("data-status", "cancelled", timeout=30_000)
    await expect(row.get_by_test_id("batch-counts")).to_have_text(
        "0 completed · 0 failed · 2 not run · 2 total")
    bar = await row.get_by_test_id("batch-progress").evaluate("""(p) => {
        const probe = document.createElement('i');
        probe.style.color = 'var(--warn)';
        document.body.append(probe);
        const warn = getComputedStyle(probe).color;
        probe.remove();
        return [p.value, p.max, getComputedStyle(p).accentColor, warn];
    }""")
    assert bar[:2] == [0, 2] and bar[2] == bar[3], bar  # empty, and not the green of done
    await page.screenshot(path=str(SHOTS / "batches-cancelled-375x812.png"))


# ---------------------------------------------------------------- saved conversations


async def test_a_saved_conversation_survives_a_reload(stack: Stack, fake: FakeOpenAI,
                                                      open_page: OpenPage,
                                                      tmp_path: Path) -> None:
    page, _ = await open_page(stack.url)
    model = "ok-4-0"
    first = unique("saved turn")
    answer = await finished(await send(page, first, model=f"openai/{model}"))
    assert answer == text_for(model, first)
    row = page.get_by_test_id("conv-row").filter(has_text=first)
    await expect(row).to_have_class(re.compile(r"\bactive\b"))
    conv_id = await row.get_attribute("data-conv-id")
    row = page.locator(f'[data-testid=conv-row][data-conv-id="{conv_id}"]')

    # A reload shows the open conversation again, as the server stored it, and continues it:
    # the provider gets the history from the server.
    await page.reload()
    await expect(page.get_by_test_id("user-text")).to_have_text([first])
    await expect(page.get_by_test_id("answer")).to_have_text([answer])
    await expect(row).to_have_class(re.compile(r"\bactive\b"))
    second = unique("after the reload")
    answer2 = await finished(await send(page, second, model=f"openai/{model}"))
    [call] = fake.calls_for(second)
    assert call.body["messages"] == [{"role": "user", "content": first},
                                     {"role": "assistant", "content": answer},
                                     {"role": "user", "content": second}]

    # Rename (inline, no dialog), then export as Markdown.
    await row.get_by_test_id("conv-rename").click()
    await page.get_by_test_id("conv-title-input").fill("Renamed chat")
    await page.get_by_test_id("conv-title-input").press("Enter")
    await expect(row.get_by_test_id("conv-open")).to_have_text("Renamed chat")
    async with page.expect_download() as info:
        await row.get_by_test_id("conv-export").click()
    dl = await info.value
    assert dl.suggested_filename == "Renamed chat.md"
    await dl.save_as(tmp_path / "chat.md")
    assert (tmp_path / "chat.md").read_text() == (
        f"# Renamed chat\n\n## User\n\n{first}\n\n## Assistant\n\n{answer}\n\n"
        f"## User\n\n{second}\n\n## Assistant\n\n{answer2}\n")

    # New chat, then open the saved one from the list.
    await page.get_by_test_id("new-chat").click()
    await expect(page.get_by_test_id("msg-assistant")).to_have_count(0)
    await expect(row).not_to_have_class(re.compile(r"\bactive\b"))
    await row.get_by_test_id("conv-open").click()
    await expect(page.get_by_test_id("answer")).to_have_text([answer, answer2])

    # Delete takes two clicks; the open chat is cleared and stays gone after a reload.
    await row.get_by_test_id("conv-delete").click()
    await expect(row.get_by_test_id("conv-delete")).to_have_text("Sure?")
    await row.get_by_test_id("conv-delete").click()
    await expect(row).to_have_count(0)
    await expect(page.get_by_test_id("msg-assistant")).to_have_count(0)
    async with httpx.AsyncClient(base_url=stack.url) as client:
        assert (await client.get(f"/v1/conversations/{conv_id}")).status_code == 404
    await page.reload()
    await expect(page.locator("#empty")).to_be_visible()
    await expect(page.locator(f'[data-conv-id="{conv_id}"]')).to_have_count(0)
