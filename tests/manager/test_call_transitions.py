"""Unit tests: a call's spec is frozen, its state changes only by legal transitions."""
import dataclasses

import pytest

from parrot.manager.call import Call, CallKind, CallSpec, CallState, IllegalTransition
from parrot.protocol.criteria import LATENCY, THROUGHPUT
from parrot.protocol.template import Template

T = Template.parse("{{input:a}} -> {{output:b}}")


def call(kind=CallKind.LLM):
    return Call(CallSpec("c", T, {"a": "x"}, {"b": "v"}, kind=kind))


def running():
    c = call()
    c.activate(None)
    c.start(0)
    return c


def test_spec_and_state_cannot_be_assigned():
    c = call()
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.state = CallState.DONE
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.spec.name = "other"
    with pytest.raises(TypeError):
        c.spec.outputs["b"] = "w"
    with pytest.raises(TypeError):  # only the spec is given: state starts PENDING
        Call(c.spec, state=CallState.DONE)


def test_a_model_call_runs_then_finishes():
    c = call()
    c.activate(THROUGHPUT)
    c.assign(2, "feeds:r")
    c.start(1)
    c.fork(5)
    c.count(12, 3)
    c.count(40, 4)  # a later output's report: the prompt stays the first one's
    c.move(0)  # engine lost: a fresh context, nothing shared
    c.finish()
    assert (c.state, c.engine, c.shared_tokens) == (CallState.DONE, 0, 0)
    assert (c.prompt_tokens, c.completion_tokens, c.error) == (12, 7, None)
    assert {"activated", "started", "finished"} <= c.times.keys()
    c.check_integrity()


def test_activation_and_criteria_only_grow():
    c = call()
    c.activate(LATENCY)
    c.activate(THROUGHPUT)
    c.activate(None)
    assert c.is_active and c.criteria == LATENCY


@pytest.mark.parametrize("step", [
    lambda c: c.start(0),  # never activated
    lambda c: c.finish(),  # a model call finishes only once it runs
    lambda c: c.move(1),
    lambda c: c.fork(3),
    lambda c: c.count(1, 1),
])
def test_illegal_before_running(step):
    c = call()
    with pytest.raises(IllegalTransition):
        step(c)
    assert c.state == CallState.PENDING
    c.check_integrity()


@pytest.mark.parametrize("step", [
    lambda c: c.start(1), lambda c: c.assign(1, None), lambda c: c.set_first_tokens([1]),
])
def test_illegal_while_running(step):
    c = running()
    with pytest.raises(IllegalTransition):
        step(c)
    assert (c.state, c.engine) == (CallState.RUNNING, 0)


@pytest.mark.parametrize("end", ["finish", "fail", "cancel"])
def test_a_finished_call_never_changes_state(end):
    c = running()
    getattr(c, end)(*(["boom"] if end == "fail" else []))
    state, error = c.state, c.error
    for step in (c.finish, c.cancel, lambda: c.fail("late"), lambda: c.start(1),
                 lambda: c.move(1), lambda: c.count(1, 1)):
        with pytest.raises(IllegalTransition):
            step()
    assert (c.state, c.error) == (state, error)
    c.check_integrity()


def test_model_free_calls_finish_without_running():
    c = call(CallKind.RENDER)
    c.activate(None)
    with pytest.raises(IllegalTransition):
        c.start(0)
    c.finish()
    assert c.state == CallState.DONE and c.engine is None
    c.check_integrity()


def test_prompt_tokens_are_set_once():
    c = call()
    c.set_first_tokens([1, 2])
    with pytest.raises(IllegalTransition):
        c.set_first_tokens([3])
    assert c.first_tokens == [1, 2]


def test_integrity_catches_an_inconsistent_record():
    c = running()
    object.__setattr__(c, "state", CallState.FAILED)  # bypassing the transitions
    with pytest.raises(AssertionError):
        c.check_integrity()
