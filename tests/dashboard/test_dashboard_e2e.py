"""End-to-end: a real `parrot serve` (with an API key) running a map-reduce program, watched
through the dashboard's JSON endpoints and through the page itself in headless Chromium.

The browser test needs the Debian packages `chromium` and `chromium-driver` and the Python
package `selenium`; without them it is skipped. Screenshots go to `artifacts/dashboard/`.
"""
from __future__ import annotations

import asyncio
import json
import shutil
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.dashboard.programs import CHUNKS, FINAL, map_reduce_calls
from tests.dashboard.test_dashboard_api import lost_fake_engine
from tests.manager.fake_engine import FakeEngine

pytestmark = pytest.mark.e2e

API_KEY = "dashboard-e2e-key"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
NUM_CALLS = len(CHUNKS) + 2
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run",
                  "--disable-dev-shm-usage", "--window-size=1500,1300")
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts" / "dashboard"


@pytest.fixture(scope="module")
def url(parrot_server_factory) -> str:
    return parrot_server_factory("--api-key", API_KEY)


def http(method: str, url: str, body: dict | None = None,
         headers: dict | None = None) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json", **AUTH,
                                              **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=120) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


class MapReduce:
    """One session running the map-reduce program; `run()` asks for the final value in a
    thread (the calls are lazy until then)."""

    def __init__(self, url: str, max_tokens: int = 12) -> None:
        self.url = url
        status, body = http("POST", f"{url}/v1/sessions")
        assert status == 201, body
        self.sid, self.token = body["session_id"], body["token"]
        self.headers = {"X-Parrot-Session-Token": self.token}
        status, body = http("POST", f"{url}/v1/sessions/{self.sid}/calls",
                            {"calls": map_reduce_calls(max_tokens=max_tokens)}, self.headers)
        assert status == 200, body
        self.final: dict = {}
        self.thread = threading.Thread(target=self._get, daemon=True)

    def run(self) -> None:
        self.thread.start()

    def _get(self) -> None:
        self.final = http("GET", f"{self.url}/v1/sessions/{self.sid}/variables/{FINAL}",
                          headers=self.headers)[1]

    def view(self, headers: dict | None = None) -> tuple[int, dict]:
        return http("GET", f"{self.url}/v1/sessions/{self.sid}/dashboard",
                    headers=self.headers if headers is None else headers)

    def close(self) -> None:
        http("DELETE", f"{self.url}/v1/sessions/{self.sid}", headers=self.headers)


def test_json_views_during_and_after_a_run(url):
    program, other = MapReduce(url), MapReduce(url)
    assert program.view(other.headers)[0] == 404  # another session's token
    status, lazy = program.view()
    assert status == 200 and lazy["counts"] == {"waiting": NUM_CALLS}

    program.run()
    phases: dict[str, list[str]] = {}
    max_running = 0
    while program.thread.is_alive():
        view = program.view()[1]
        for call in view["calls"]:
            if phases.setdefault(call["id"], [call["phase"]])[-1] != call["phase"]:
                phases[call["id"]].append(call["phase"])
        engine = http("GET", f"{url}/v1/parrot/dashboard/engine")[1]
        max_running = max(max_running, engine["totals"]["num_running"])
        time.sleep(0.05)
    assert program.final.get("value"), program.final

    assert max_running >= 2  # the maps ran as one batch
    assert all({"prefilling", "decoding"} & set(phases[f"map{i}"]) for i in range(len(CHUNKS))), phases
    assert phases["reduce"][0] == "waiting" and "decoding" in phases["reduce"], phases
    status, after = program.view()
    assert after["counts"] == {"done": NUM_CALLS}
    assert [sorted(g["members"]) for g in after["groups"]] == \
        [[f"map{i}" for i in range(len(CHUNKS))]]
    tree = after["context_tree"]
    shared = [p for p in tree["prefixes"] if len(p["forked_by"]) == len(CHUNKS)]
    assert len(shared) == 1 and shared[0]["tokens"] >= 16, tree["prefixes"]
    assert shared[0]["blocks"] == -(-shared[0]["tokens"] // tree["block_size"])
    sessions = http("GET", f"{url}/v1/parrot/dashboard/sessions")[1]["sessions"]
    mine = next(s for s in sessions if s["session_id"] == program.sid)
    assert mine["calls"] == {"done": NUM_CALLS}
    assert program.token not in json.dumps(sessions)
    for p in (program, other):
        p.close()
    assert program.view()[0] == 404


@pytest.fixture
def browser():
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    for path in (CHROMIUM, CHROMEDRIVER):
        if not shutil.which(path):
            pytest.skip(f"{path} is not installed (apt-get install chromium chromium-driver)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


NODE_PHASES_JS = """return [...document.querySelectorAll('#graph .call-node')]
    .map(n => [n.dataset.call, n.dataset.phase]);"""


def test_page_shows_the_graph_changing_as_the_program_runs(url, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    program = MapReduce(url, max_tokens=24)
    browser.get(f"{url}/dashboard#interval=0.2")
    browser.find_element(By.ID, "api-key").send_keys(API_KEY)
    browser.find_element(By.ID, "sid").send_keys(program.sid)
    browser.find_element(By.ID, "token").send_keys(program.token)
    browser.find_element(By.ID, "watch-button").click()
    wait = WebDriverWait(browser, 30, poll_frequency=0.1)
    wait.until(lambda d: len(d.execute_script(NODE_PHASES_JS)) == NUM_CALLS)
    assert {phase for _, phase in browser.execute_script(NODE_PHASES_JS)} == {"waiting"}
    assert browser.find_element(By.ID, "status").text.startswith("live")

    program.run()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    seen: dict[str, list[str]] = {}
    mid_run_shot = False
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        nodes = browser.execute_script(NODE_PHASES_JS)
        for call, phase in nodes:
            if seen.setdefault(call, [phase])[-1] != phase:
                seen[call].append(phase)
        if not mid_run_shot and any(p == "decoding" for _, p in nodes):
            browser.save_screenshot(str(ARTIFACTS / "dashboard-running.png"))
            mid_run_shot = True
        if nodes and all(p == "done" for _, p in nodes):
            break
        time.sleep(0.1)
    assert all(phases[-1] == "done" for phases in seen.values()), seen
    assert len(seen) == NUM_CALLS and all(len(phases) >= 2 for phases in seen.values()), seen
    assert any("decoding" in phases for phases in seen.values()), seen
    program.thread.join(30)

    browser.find_element(By.CSS_SELECTOR, f'.chip[data-var="{FINAL}"]').click()
    wait.until(lambda d: d.find_elements(By.ID, "variable-value"))
    assert browser.find_element(By.ID, "variable-value").get_attribute("textContent") == \
        program.final["value"]
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#tree .tree-node.call"))
               == len(CHUNKS) + 1)
    assert len(browser.find_elements(By.CSS_SELECTOR, "#charts .chart")) == 5
    browser.save_screenshot(str(ARTIFACTS / "dashboard-done.png"))

    other = MapReduce(url)  # its token does not open this session
    token = browser.find_element(By.ID, "token")
    token.clear()
    token.send_keys(other.token)
    browser.find_element(By.ID, "watch-button").click()
    wait.until(lambda d: "not found" in d.find_element(By.ID, "graph-summary").text)
    assert not browser.find_elements(By.CSS_SELECTOR, "#graph .call-node, .chip")
    for p in (program, other):
        p.close()


@pytest.fixture
def lost_engine_url():
    """The app in a thread of its own over two FakeEngines, the second lost (no model)."""
    from aiohttp import web

    from parrot.server.app import create_app

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    runner = web.AppRunner(create_app([FakeEngine(), lost_fake_engine(1)]), shutdown_timeout=1)

    async def start() -> int:
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        return runner.addresses[0][1]

    port = asyncio.run_coroutine_threadsafe(start(), loop).result(30)
    yield f"http://127.0.0.1:{port}"
    asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(30)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


def test_page_shows_a_lost_engine_with_its_error(lost_engine_url, browser):
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(f"{lost_engine_url}/dashboard#interval=0.2")
    # the page re-renders every 0.2 s: a row found may be replaced before it is read, so
    # each read is one poll of the wait, retried when the element went stale
    wait = WebDriverWait(browser, 30, poll_frequency=0.1,
                         ignored_exceptions=(StaleElementReferenceException,))
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#engines tr.engine-row")) == 2)
    lost = wait.until(lambda d: [(row.get_attribute("data-engine"), row.text) for row in
                                 d.find_elements(By.CSS_SELECTOR, "#engines tr.engine-row.lost")])
    assert [engine for engine, _ in lost] == ["1"]
    assert "LOST" in lost[0][1] and "engine lost: engine 1 (the actor died)" in lost[0][1]
    assert "1 lost" in wait.until(lambda d: d.find_element(By.ID, "engine-model").text)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "dashboard-lost-engine.png"))
    browser.get("about:blank")  # close the page's event stream before the server stops
