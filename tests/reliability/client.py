"""A tiny blocking HTTP client for the reliability tests: raw bodies and raw header bytes,
answers as (status, headers, parsed JSON or text). Plus the checks every test shares."""
from __future__ import annotations

import http.client
import json
import time
from typing import Any, NamedTuple
from urllib.parse import urlparse

NORMAL = {"prompt": "Hello", "max_tokens": 1, "temperature": 0}


class Answer(NamedTuple):
    status: int
    headers: Any
    body: Any  # parsed JSON, or text when the answer is not JSON

    def error(self) -> dict:
        """The OpenAI-style error object; fails unless the answer is a JSON error."""
        assert isinstance(self.body, dict) and isinstance(self.body.get("error"), dict), self
        error = self.body["error"]
        assert isinstance(error.get("message"), str) and error["message"], self
        assert isinstance(error.get("type"), str), self
        return error


def call(url: str, method: str, path: str, body: Any = None, *, raw: bytes | None = None,
         headers: dict[str, str | bytes] | None = None, timeout: float = 60.0) -> Answer:
    """`body` is sent as JSON; `raw` as is. Header values may be bytes (sent unencoded)."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    parts = urlparse(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        conn.putrequest(method, path)
        sent = {"Content-Type": "application/json", **(headers or {})}
        if data is not None:
            sent["Content-Length"] = str(len(data))
        for name, value in sent.items():
            conn.putheader(name, value)
        conn.endheaders(data)
        resp = conn.getresponse()
        text = resp.read()
    finally:
        conn.close()
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = text.decode(errors="replace")
    return Answer(resp.status, resp.headers, parsed)


def assert_serves(url: str, headers: dict | None = None) -> None:
    """A normal generation still works."""
    answer = call(url, "POST", "/v1/completions", NORMAL, headers=headers)
    assert answer.status == 200, answer
    assert answer.body["usage"]["completion_tokens"] == 1, answer


def open_session(url: str, headers: dict | None = None) -> tuple[str, dict[str, str]]:
    """(session base path, headers carrying its token)."""
    answer = call(url, "POST", "/v1/sessions", {}, headers=headers)
    assert answer.status == 201, answer
    token = {**(headers or {}), "X-Parrot-Session-Token": answer.body["token"]}
    return f"/v1/sessions/{answer.body['session_id']}", token


def engine_stats(url: str, headers: dict | None = None) -> dict:
    answer = call(url, "GET", "/v1/parrot/engine_stats", headers=headers)
    assert answer.status == 200, answer
    return answer.body


def wait_idle(url: str, timeout: float = 30.0, headers: dict | None = None) -> dict:
    """Wait until nothing runs, waits or holds a KV block (cached blocks may remain)."""
    deadline = time.monotonic() + timeout
    while True:
        stats = engine_stats(url, headers)
        if stats["num_running"] == stats["num_waiting"] == stats["num_used_blocks"] == \
                stats["num_contexts"] == 0:
            return stats
        assert time.monotonic() < deadline, f"engine not idle: {stats}"
        time.sleep(0.1)
