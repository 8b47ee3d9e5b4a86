"""A session's Semantic Variable graph: variables, calls, the edges between them, and its rules.

Invariants (checked by `check_integrity`): every variable has at most one producer and the
producer lists it among its outputs; consumer edges are mirrored on both ends; the graph is
acyclic; a DONE call's outputs are ready; a ready variable has no error; each call's own
record is consistent (`Call.check_integrity`).
"""
from __future__ import annotations

from parrot.manager.call import Call, CallState
from parrot.manager.errors import Conflict, NotFound
from parrot.manager.variable import Variable


class Graph:
    def __init__(self) -> None:
        self.variables: dict[str, Variable] = {}
        self.calls: dict[str, Call] = {}

    def variable(self, var_id: str) -> Variable:
        var = self.variables.get(var_id)
        if var is None:
            raise NotFound(f"variable '{var_id}' not found", param=var_id)
        return var

    def value_of(self, var_id: str) -> str | None:
        return self.variables[var_id].value

    def add_variable(self, var_id: str, name: str | None = None,
                     value: str | None = None) -> Variable:
        if var_id in self.variables:
            raise Conflict(f"variable id '{var_id}' already exists", param=var_id)
        var = self.variables[var_id] = Variable(var_id, name)
        if value is not None:
            var.resolve(value)
        return var

    def set_value(self, var_id: str, value: str) -> Variable:
        var = self.variable(var_id)
        if var.producer is not None:
            raise Conflict(f"variable '{var_id}' is produced by call '{var.producer}'; "
                           "only its producer gives it a value", param=var_id)
        if var.is_done:
            raise Conflict(f"variable '{var_id}' already has a value", param=var_id)
        var.resolve(value)
        return var

    def add_calls(self, calls: list[Call]) -> None:
        """Add calls atomically: if one is refused, none stays."""
        added: list[tuple[Call, list[str]]] = []
        try:
            for call in calls:
                added.append((call, self._add_call(call)))
        except Exception:
            for call, created in reversed(added):
                self._remove_call(call, created)
            raise

    def _add_call(self, call: Call) -> list[str]:
        if call.id in self.calls:
            raise Conflict(f"call id '{call.id}' already exists", param=call.id)
        for var_id in call.input_vars:
            if var_id not in self.variables:
                raise NotFound(f"call '{call.id}' reads unknown variable '{var_id}'", param=var_id)
        for var_id in call.output_vars:
            self._check_can_produce(call, var_id)
        self._check_acyclic(call)
        created = [v for v in call.output_vars if v not in self.variables]
        for var_id in created:
            self.variables[var_id] = Variable(var_id, _output_name(call, var_id))
        for var_id in call.output_vars:
            self.variables[var_id].producer = call.id
        for var_id in call.input_vars:
            self.variables[var_id].consumers.add(call.id)
        self.calls[call.id] = call
        return created

    def _remove_call(self, call: Call, created: list[str]) -> None:
        del self.calls[call.id]
        for var_id in call.input_vars:
            self.variables[var_id].consumers.discard(call.id)
        for var_id in call.output_vars:
            self.variables[var_id].producer = None
        for var_id in created:
            del self.variables[var_id]

    def _check_can_produce(self, call: Call, var_id: str) -> None:
        if len(call.output_vars) != len(set(call.output_vars)):
            raise Conflict(f"call '{call.id}' writes variable '{var_id}' twice", param=var_id)
        var = self.variables.get(var_id)
        if var is None:
            return
        if var.producer is not None:
            raise Conflict(f"variable '{var_id}' already has a producer (call '{var.producer}')",
                           param=var_id)
        if var.is_done:
            raise Conflict(f"variable '{var_id}' already has a value; it cannot be an output",
                           param=var_id)

    def _check_acyclic(self, call: Call) -> None:
        """Refuse `call` if one of its outputs already feeds one of its inputs."""
        inputs = set(call.input_vars)
        for start in call.output_vars:
            path = self._path_to(start, inputs)
            if path is not None:
                shown = " -> ".join(path + [call.id, start])
                raise Conflict(f"call '{call.id}' would create a cycle: {shown}", param=start)

    def _path_to(self, start: str, targets: set[str]) -> list[str] | None:
        """A var -> call -> var ... path from `start` to a variable in `targets`, if any."""
        stack, seen = [(start, [start])], {start}
        while stack:
            var_id, path = stack.pop()
            if var_id in targets:
                return path
            consumers = self.variables[var_id].consumers if var_id in self.variables else ()
            for call_id in sorted(consumers):
                for out in self.calls[call_id].output_vars:
                    if out not in seen:
                        seen.add(out)
                        stack.append((out, path + [call_id, out]))
        return None

    def fail_call(self, call: Call, message: str) -> list[Call]:
        """Mark `call` failed, its outputs failed, and every pending call downstream too;
        return the calls that failed."""
        stack, failed = [(call, message)], []
        while stack:
            current, reason = stack.pop()
            if current.is_finished:
                continue
            failed.append(current)
            current.fail(reason)
            for var_id in current.output_vars:
                self.variables[var_id].fail(reason)
                for consumer in self.variables[var_id].consumers:
                    stack.append((self.calls[consumer], f"input '{var_id}' failed: {reason}"))
        return failed

    def pending_calls(self) -> list[Call]:
        return [c for c in self.calls.values() if c.state == CallState.PENDING]

    def is_ready(self, call: Call) -> bool:
        return all(self.variables[v].is_ready for v in call.input_vars)

    def failed_input(self, call: Call) -> str | None:
        for var_id in call.input_vars:
            var = self.variables[var_id]
            if var.error is not None:
                return f"input '{var_id}' failed: {var.error}"
        return None

    def cancel_all(self, reason: str) -> None:
        for call in self.calls.values():
            if not call.is_finished:
                call.cancel(reason)
        for var in self.variables.values():
            var.fail(reason)

    def to_json(self) -> dict:
        return {"variables": [v.to_json() for v in self.variables.values()],
                "calls": [c.to_json() for c in self.calls.values()]}

    def check_integrity(self) -> None:
        for var in self.variables.values():
            if var.producer is not None:
                assert var.id in self.calls[var.producer].output_vars, f"{var.id}: bad producer"
            for call_id in var.consumers:
                assert var.id in self.calls[call_id].input_vars, f"{var.id}: bad consumer edge"
            assert not (var.is_ready and var.error), f"{var.id}: ready and failed"
            assert var.is_done == (var.value is not None or var.error is not None), var.id
        for call in self.calls.values():
            call.check_integrity()
            for var_id in call.output_vars:
                assert self.variables[var_id].producer == call.id, f"{call.id}: output {var_id}"
            for var_id in call.input_vars:
                assert call.id in self.variables[var_id].consumers, f"{call.id}: input {var_id}"
            if call.state == CallState.DONE:
                assert all(self.variables[v].is_ready for v in call.output_vars), call.id
        assert self._topological_order() is not None, "graph has a cycle"

    def _topological_order(self) -> list[str] | None:
        indegree = {c.id: sum(self.variables[v].producer is not None for v in c.input_vars)
                    for c in self.calls.values()}
        ready = [cid for cid, n in indegree.items() if n == 0]
        order = []
        while ready:
            cid = ready.pop()
            order.append(cid)
            for var_id in self.calls[cid].output_vars:
                for consumer in self.variables[var_id].consumers:
                    indegree[consumer] -= 1
                    if indegree[consumer] == 0:
                        ready.append(consumer)
        return order if len(order) == len(self.calls) else None


def _output_name(call: Call, var_id: str) -> str:
    return next(name for name, vid in call.outputs.items() if vid == var_id)
