"""End-to-end: a real `parrot serve` subprocess (embedded SmolLM2, float32, CPU) driven by the
Python client (sync and async) and raw HTTP. Slow: marked e2e."""
import asyncio
import time
import uuid

import aiohttp
import pytest

import parrot as P

pytestmark = pytest.mark.e2e


@P.semantic_function(max_tokens=12, min_tokens=3)
def rewrite(text, out):
    """<|im_start|>system
    You rewrite the user's text as one short, plain sentence.<|im_end|>
    <|im_start|>user
    {{input:text}}<|im_end|>
    <|im_start|>assistant
    {{output:out}}"""


@P.semantic_function(max_tokens=10, min_tokens=3)
def summarize(chunk, summary):
    """<|im_start|>system
    You summarize documents in a few words.<|im_end|>
    <|im_start|>user
    Summarize: {{input:chunk}}<|im_end|>
    <|im_start|>assistant
    {{output:summary}}"""


@P.semantic_function(max_tokens=12, min_tokens=3)
def combine(parts, final):
    """<|im_start|>system
    You merge partial summaries into one sentence.<|im_end|>
    <|im_start|>user
    Merge these summaries:
    {{input:parts}}<|im_end|>
    <|im_start|>assistant
    {{output:final}}"""


DOCS = ["The river flooded the valley after a week of heavy rain.",
        "Bees carry pollen between flowers and help fruit trees grow.",
        "The old library opened a new room for children's books.",
        "A small boat crossed the lake before the storm arrived."]


def alone(url: str, fn, *args) -> str:
    """The same function on the same (constant) inputs, alone in a fresh session."""
    with P.Session(url):
        return fn(*args).get()


def assert_served_in_place(graph: dict, producer_ids: list[str], consumer_id: str) -> None:
    """The consumer started right after its last producer finished, with no client request
    in between (the server's own timestamps)."""
    calls = {c["id"]: c for c in graph["calls"]}
    done = max(calls[p]["times"]["finished"] for p in producer_ids)
    started = calls[consumer_id]["times"]["started"]
    assert done - 0.01 <= started < done + 1.0, (done, started)
    between = [r for r in graph["requests"] if done <= r["at"] <= started]
    assert between == [], between


def test_chain_of_four_sync_client(parrot_server):
    url = parrot_server
    with P.Session(url) as s:
        outs = [rewrite(DOCS[0])]
        for _ in range(3):
            outs.append(rewrite(outs[-1]))
        t0 = time.monotonic()
        last = outs[-1].get(P.LATENCY)
        elapsed = time.monotonic() - t0
        values = [v.get() for v in outs]  # already produced: no new work
        graph = s.graph()
    assert last == values[-1] and all(values), values
    ids = [c["id"] for c in graph["calls"]]
    for i in range(1, 4):
        assert_served_in_place(graph, [ids[i - 1]], ids[i])
    inputs = [DOCS[0]] + values[:-1]
    for given, got in zip(inputs, values):
        assert alone(url, rewrite, given) == got
    print(f"chain of 4: {elapsed:.2f} s")


async def test_map_reduce_async_client(parrot_server):
    url = parrot_server
    async with P.Session(url) as s:
        parts = [summarize(d) for d in DOCS]
        final = combine(P.join(parts, sep="\n"))
        value = await final.aget(P.LATENCY)
        summaries = [await p.aget() for p in parts]
        graph = s.graph()
    calls = {c["id"]: c for c in graph["calls"]}
    maps = [c for c in graph["calls"] if c["name"] == "summarize"]
    reduce_id = next(c["id"] for c in graph["calls"] if c["name"] == "combine")
    assert_served_in_place(graph, [m["id"] for m in maps], reduce_id)
    assert {m["group"] for m in maps} == {f"feeds:{reduce_id}"}
    assert all(m["tokens"]["shared"] > 0 for m in maps), maps  # forked one shared prefix
    assert calls[reduce_id]["priority"] == 0  # LATENCY
    for doc, got in zip(DOCS, summaries):
        assert alone(url, summarize, doc) == got
    assert alone(url, combine, "\n".join(summaries)) == value


def test_unfetched_calls_never_run(parrot_server):
    with P.Session(parrot_server) as s:
        wanted = rewrite("Cats sleep most of the day.")
        ignored = rewrite(rewrite("Dogs like to run in the park."))
        wanted.get(P.THROUGHPUT)
        time.sleep(0.3)
        graph = s.graph()
    states = sorted(c["state"] for c in graph["calls"])
    assert states == ["done", "pending", "pending"], graph["calls"]
    assert ignored.value is None


async def engine_stats(http: aiohttp.ClientSession, url: str) -> dict:
    async with http.get(f"{url}/v1/parrot/engine_stats") as resp:
        assert resp.status == 200
        return await resp.json()


@P.semantic_function(max_tokens=4)
def answer(background, question, reply):
    """<|im_start|>system
    {{input:background}}<|im_end|>
    <|im_start|>user
    {{input:question}}<|im_end|>
    <|im_start|>assistant
    {{output:reply}}"""


def fresh_background() -> str:
    """A long system prompt no earlier test sent (so no prefix cache holds it)."""
    return (f"Reference code {uuid.uuid4().hex}. " +
            "Parrots are intelligent birds that live in warm forests and eat seeds. " * 8)


async def test_shared_prefix_prefilled_once(parrot_server):
    url, n, background = parrot_server, 4, fresh_background()

    async with aiohttp.ClientSession() as http:
        before = await engine_stats(http, url)
        async with P.Session(url) as s:
            replies = [answer(background, f"Question {i}: what do parrots eat?") for i in range(n)]
            await asyncio.gather(*(r.aget() for r in replies))
            graph = s.graph()
        after = await engine_stats(http, url)
    calls = [c["tokens"] for c in graph["calls"]]
    shared = calls[0]["shared"]
    assert shared > 100 and all(c["shared"] == shared for c in calls), calls
    prefilled = after["num_prefill_tokens"] - before["num_prefill_tokens"]
    once = shared + sum(c["prompt"] - shared for c in calls)
    print(f"prefix of {shared} tokens shared by {n} calls: prefilled {prefilled} tokens "
          f"(once: {once}, per call: {sum(c['prompt'] for c in calls)})")
    assert prefilled <= once + 2 * n + 16, (prefilled, once)
    assert prefilled < 2 * shared  # the shared prefix was not prefilled per call


async def test_a_task_groups_shared_prefix_is_prefilled_once(parrot_server):
    """Maps feeding one reduce (a task group, admitted together) with a long common prompt:
    the prefix is computed once, not by each map (the engine's in-flight wait does not hold
    a group's members back, so they must fork the filled prefix). Two maps: the session's
    prefix of them is cut to whole KV blocks, as the cache path needs."""
    url, n, background = parrot_server, 2, fresh_background()

    async with aiohttp.ClientSession() as http:
        before = await engine_stats(http, url)
        async with P.Session(url) as s:
            notes = [answer(background, f"One line about topic {i}.") for i in range(n)]
            await combine(P.join(notes, sep="\n")).aget(P.LATENCY)
            graph = s.graph()
        after = await engine_stats(http, url)
    maps = [c for c in graph["calls"] if c["name"] == "answer"]
    assert len({m["group"] for m in maps}) == 1 and maps[0]["group"], maps
    shared = min(m["tokens"]["shared"] for m in maps)
    assert shared > 100, maps
    prefilled = after["num_prefill_tokens"] - before["num_prefill_tokens"]
    assert prefilled < 2 * shared, (prefilled, shared)  # not once per map


async def test_bad_requests_are_4xx_and_server_keeps_serving(parrot_server):
    url = parrot_server
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{url}/v1/sessions", json={}) as resp:
            created = await resp.json()
        sid, auth = created["session_id"], {"X-Parrot-Session-Token": created["token"]}
        base = f"{url}/v1/sessions/{sid}"

        async def status_of(method, path, body=None, headers=auth):
            async with http.request(method, base + path, json=body, headers=headers) as resp:
                return resp.status, (await resp.json())["error"]["message"]

        tmpl = "Q: {{input:x}} A: {{output:y}}"
        await http.post(f"{base}/variables", json={"id": "x"}, headers=auth)
        await http.post(f"{base}/calls", json={"calls": [
            {"id": "c1", "template": tmpl, "inputs": {"x": {"var": "x"}},
             "outputs": {"y": {"var": "y"}}}]}, headers=auth)
        cycle = await status_of("POST", "/calls", {"calls": [
            {"id": "c2", "template": tmpl, "inputs": {"x": {"var": "y"}},
             "outputs": {"y": {"var": "x"}}}]})
        assert cycle[0] == 409 and "cycle" in cycle[1]
        unknown = await status_of("GET", "/variables/nope")
        assert unknown[0] == 404 and "nope" in unknown[1]
        template = await status_of("POST", "/calls", {"calls": [
            {"template": "Q: {{input:x A: {{output:y}}", "inputs": {"x": "a"}}]})
        assert template[0] == 400 and "(at 1:4)" in template[1]
        wrong = await status_of("GET", "/graph", headers={"X-Parrot-Session-Token": "guess"})
        assert wrong[0] == 404
        too_long = await status_of("POST", "/calls", {"calls": [
            {"template": tmpl, "inputs": {"x": "a"},
             "outputs": {"y": {"sampling": {"max_tokens": -1}}}}]})
        assert too_long[0] == 400 and "max_tokens" in too_long[1]
        async with http.put(f"{base}/variables/x", json={"value": "What is 2+2?"},
                            headers=auth) as resp:
            assert resp.status == 200
        async with http.get(f"{base}/variables/y", headers=auth) as resp:
            assert resp.status == 200 and isinstance((await resp.json())["value"], str)
        await http.delete(base, headers=auth)


def test_sessions_cannot_read_each_other(parrot_server):
    with P.Session(parrot_server) as a, P.Session(parrot_server) as b:
        secret = a.variable("a's secret")
        secret.get()
        spy = P.SemanticVariable(b, secret.id)  # same id, other session
        with pytest.raises(P.ServerError) as err:
            spy.get(timeout=5)
        assert err.value.status == 404


def test_stream_sync(parrot_server):
    with P.Session(parrot_server):
        out = rewrite("The sun rose over the hills and warmed the fields.")
        pieces = list(out.stream())
    assert "".join(pieces) == out.value and len(pieces) >= 2


async def test_close_and_expiry_free_every_block(parrot_server):
    url = parrot_server
    slow = P.semantic_function(max_tokens=200, ignore_eos=True, eager=True)(_story)
    async with P.Session(url):  # closed mid-generation
        story = slow("a lighthouse")
        await asyncio.sleep(1.0)
    async with P.Session(url, idle_timeout=1.0) as idle:  # expires mid-generation
        slow("a mountain")
        await idle.aflush()
        await asyncio.sleep(3.0)
        with pytest.raises(P.ServerError) as err:
            await idle.agraph()
        assert err.value.status == 404
    assert story.value is None
    async with aiohttp.ClientSession() as http:
        deadline = time.monotonic() + 20
        while True:
            stats = await engine_stats(http, url)
            if stats["num_used_blocks"] == stats["num_running"] == stats["num_waiting"] == 0:
                break
            assert time.monotonic() < deadline, stats
            await asyncio.sleep(0.2)


def _story(topic, story):
    """<|im_start|>user
    Tell a long story about {{input:topic}}.<|im_end|>
    <|im_start|>assistant
    {{output:story}}"""


async def test_two_engines_keep_prefix_groups_together(parrot_server_factory):
    url = parrot_server_factory("--num-engines", "2")
    async with P.Session(url) as s:
        summaries = [summarize(d) for d in DOCS[:2]]
        rewrites = [rewrite(d) for d in DOCS[2:]]
        values = await asyncio.gather(*(v.aget() for v in summaries + rewrites))
        graph = await s.agraph()
    engines = {c["name"]: set() for c in graph["calls"]}
    for c in graph["calls"]:
        engines[c["name"]].add(c["engine"])
    assert len(engines["summarize"]) == len(engines["rewrite"]) == 1, engines
    assert engines["summarize"] != engines["rewrite"], engines
    assert all(c["tokens"]["shared"] > 0 for c in graph["calls"])
    assert values[0] == alone(url, summarize, DOCS[0])
