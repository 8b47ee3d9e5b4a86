"""End-to-end (issue 14): through the real client and a real `parrot serve`, a one-call program
is ONE request until its value is known (open + call + get), counted by the server's own
/metrics; the old order of requests (open, submit, get) gives the same value in three."""
from collections import Counter
from urllib.request import urlopen

import pytest

import parrot as P
from tests.native.test_e2e import rewrite

pytestmark = pytest.mark.e2e
TEXT = "the cat, which was very old, sat down slowly on the warm mat"


def answered(url: str) -> Counter:
    """Requests the server has answered, by route (its /metrics counter; /metrics left out)."""
    counts: Counter = Counter()
    with urlopen(f"{url}/metrics", timeout=30) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith("parrot:http_requests_total{"):
                labels, value = line.rsplit(" ", 1)
                route = labels.split('route="', 1)[1].split('"', 1)[0]
                if route != "/metrics":
                    counts[route] += int(float(value))
    return counts


def new_requests(after: Counter, before: Counter) -> dict:
    return {route: n for route, n in (after - before).items() if n}


def test_a_one_call_program_is_one_request(parrot_server):
    url = parrot_server
    before = answered(url)
    with P.Session(url) as s:
        value = rewrite(TEXT).get()
        got = answered(url)
        assert s.id is not None  # known from the answer
    closed = answered(url)
    assert new_requests(got, before) == {"/v1/sessions": 1}
    assert new_requests(closed, got) == {"/v1/sessions/{sid}": 1}  # the DELETE on leaving

    with P.Session(url) as s:
        s.open()  # the old order: open, then submit, then get
        assert rewrite(TEXT).get() == value and value.strip()
    assert sum(new_requests(answered(url), closed).values()) == 4  # + the DELETE
