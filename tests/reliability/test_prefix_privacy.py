"""The prefix cache is shared across sessions and APIs; what it can reveal is bounded.

The cache is keyed by chained hashes of full blocks of token ids, verified against the stored
tokens (engine/block_manager.py), so a request gets cached KV for its first k tokens only if
it sent those k tokens itself and someone sent them before. Its `cached_tokens` is therefore
at most the longest common prefix of its own prompt with an earlier prompt, in whole blocks:
a correct guess of someone else's prompt can be confirmed (and timed) at block granularity,
which is what OpenAI's `cached_tokens` implies too; nothing is returned that the requester
did not send. No status endpoint carries prompt or variable text.
"""
from __future__ import annotations

import uuid

import pytest
from transformers import AutoTokenizer

from tests.reliability.client import call, open_session

pytestmark = pytest.mark.e2e
BLOCK = 16


@pytest.fixture(scope="module")
def tokenizer(smollm_dir):
    return AutoTokenizer.from_pretrained(str(smollm_dir))


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def cached_tokens(server: str, prompt: list[int]) -> int:
    answer = call(server, "POST", "/v1/completions",
                  {"prompt": prompt, "max_tokens": 1, "temperature": 0})
    assert answer.status == 200, answer
    return answer.body["usage"]["prompt_tokens_details"]["cached_tokens"]


def test_cached_kv_only_for_tokens_the_request_sent_itself(server, tokenizer):
    tag, secret = uuid.uuid4().hex, uuid.uuid4().hex
    public = f"[{tag}] You answer questions for the city library. " + \
        "Be brief and polite. Cite the shelf of every book. " * 4
    base, auth = open_session(server)  # session A holds a secret after the public text
    answer = call(server, "POST", f"{base}/calls", headers=auth, body={"calls": [{
        "template": public + "{{input:s}}\nAnswer: {{output:y}}",
        "inputs": {"s": f"The vault code is {secret}."}, "outputs": {"y": "y"},
        "sampling": {"max_tokens": 2}}]})
    assert answer.status == 200, answer
    assert call(server, "GET", f"{base}/variables/y", headers=auth).status == 200
    a_prompt = tokenizer.encode(f"{public}The vault code is {secret}.\nAnswer: ",
                                add_special_tokens=False)
    guesses = [tokenizer.encode(public + "When does the library open?", add_special_tokens=False),
               tokenizer.encode(f"{public}The vault code is {uuid.uuid4().hex}.",
                                add_special_tokens=False),
               a_prompt]  # the last guess is right: it is confirmed, nothing more
    sent = [a_prompt]
    for guess in guesses:
        cached = cached_tokens(server, guess)
        bound = max(common_prefix(guess, earlier) for earlier in sent)
        assert cached % BLOCK == 0 and cached <= bound, (cached, bound)
        assert cached >= (min(bound, len(guess) - 1) // BLOCK - 1) * BLOCK  # sharing works
        sent.append(guess)
    assert_no_text_leaks(server, secret)
    assert call(server, "DELETE", base, headers=auth).status == 200


def assert_no_text_leaks(server: str, secret: str) -> None:
    """While session A holds the secret: no status endpoint and no other session sees it."""
    b_base, b_auth = open_session(server)
    paths = ["/v1/parrot/engine_stats", "/metrics", "/v1/models", "/openapi.json",
             "/v1/parrot/dashboard/sessions", "/v1/parrot/dashboard/engine"]
    for path in paths:
        answer = call(server, "GET", path)
        assert answer.status == 200 and secret not in str(answer.body), path
    for path in ("/graph", "/dashboard"):
        answer = call(server, "GET", b_base + path, headers=b_auth)
        assert answer.status == 200 and secret not in str(answer.body), path
    call(server, "DELETE", b_base, headers=b_auth)
