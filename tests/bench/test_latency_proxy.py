"""The benchmark's delaying proxy: a real aiohttp server behind it (lower bounds on delay
only: an upper bound would depend on the machine's load)."""

import asyncio
import time

from aiohttp import ClientSession, web

from parrot.bench.latency_proxy import LatencyProxy


async def start_app(aiohttp_server):
    async def echo(request):
        return web.json_response({"got": (await request.json())["x"]})

    async def stream(request):
        resp = web.StreamResponse()
        await resp.prepare(request)
        for i in range(5):
            await resp.write(f"{time.perf_counter()}\n".encode())
            await asyncio.sleep(0.02)
        return resp

    app = web.Application()
    app.router.add_post("/echo", echo)
    app.router.add_get("/stream", stream)
    return await aiohttp_server(app)


async def test_each_request_and_each_chunk_pays_the_delay(aiohttp_server):
    server = await start_app(aiohttp_server)
    direct = f"http://127.0.0.1:{server.port}"
    async with LatencyProxy(direct, 0.1) as proxy, ClientSession() as http:
        async with http.post(f"{proxy.url}/echo", json={"x": 7}) as r:  # warm the connection
            assert (await r.json()) == {"got": 7}
        start = time.perf_counter()
        async with http.post(f"{proxy.url}/echo", json={"x": 8}) as r:
            assert (await r.json()) == {"got": 8}
        assert time.perf_counter() - start >= 0.1  # a whole round trip, both halves
        async with http.get(f"{proxy.url}/stream") as r:
            lags = [time.perf_counter() - float(line) async for line in r.content]
    assert len(lags) == 5
    assert all(lag >= 0.05 for lag in lags), lags  # every chunk arrives half a round trip late
