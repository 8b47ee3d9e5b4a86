"""Incremental detokenization with stop strings, never emitting a broken UTF-8 character."""
from __future__ import annotations


class IncrementalDetokenizer:
    """Feed token ids one at a time; get back the new, safe-to-show text.

    Text that might be the start of a stop string is held back until it is
    known not to be one; on a stop string the text before it is released and
    `stopped` is set.
    """

    def __init__(self, tokenizer, stop: list[str], prompt_tail: list[int] | None = None):
        self.tokenizer = tokenizer
        self.stop = stop
        self.max_stop = max((len(s) for s in stop), default=0)
        self.tokens: list[int] = list(prompt_tail or [])  # context for leading-space handling
        self.prefix_offset = 0
        self.read_offset = len(self.tokens)
        self.text = ""  # all decoded generated text
        self.emitted = 0  # chars of self.text already returned
        self.stopped = False

    def add(self, token_id: int) -> str:
        self.tokens.append(token_id)
        prefix = self._decode(self.tokens[self.prefix_offset:self.read_offset])
        full = self._decode(self.tokens[self.prefix_offset:])
        if len(full) > len(prefix) and not full.endswith("\ufffd"):
            self.text += full[len(prefix):]
            self.prefix_offset, self.read_offset = self.read_offset, len(self.tokens)
        return self._release(final=False)

    def flush(self) -> str:
        """At the end of generation: release whatever was held back."""
        return self._release(final=True)

    def _release(self, final: bool) -> str:
        if self.stopped:
            return ""
        for s in self.stop:
            at = self.text.find(s, max(0, self.emitted - len(s) + 1))
            if at != -1:
                self.text = self.text[:at]
                self.stopped = True
                final = True
        hold = 0 if final else self._held_back()
        end = max(self.emitted, len(self.text) - hold)
        out, self.emitted = self.text[self.emitted:end], end
        return out

    def _held_back(self) -> int:
        """Length of the longest tail of the text that is a proper prefix of a stop string."""
        for n in range(min(self.max_stop - 1, len(self.text)), 0, -1):
            tail = self.text[-n:]
            if any(s.startswith(tail) for s in self.stop):
                return n
        return 0

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
