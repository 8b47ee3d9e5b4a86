"""The map-reduce program the dashboard tests run, as native-API call specs."""
from __future__ import annotations

SUMMARIZE = """<|im_start|>system
You are an expert at reading software licenses. Summarize the given part of a license
in one or two plain sentences.<|im_end|>
<|im_start|>user
{{input:chunk}}<|im_end|>
<|im_start|>assistant
{{output:summary}}"""

COMBINE = """<|im_start|>system
You are an expert at reading software licenses.<|im_end|>
<|im_start|>user
Here are summaries of consecutive parts of one license:
{{input:summaries}}
Write one short paragraph that summarizes the whole license.<|im_end|>
<|im_start|>assistant
{{output:final}}"""

CHUNKS = [
    ("Licensed under the Apache License, Version 2.0; you may not use this file except in "
     "compliance with the License."),
    ("Unless required by applicable law or agreed to in writing, software distributed under "
     "the License is distributed on an AS IS BASIS."),
    ("Each Contributor hereby grants to You a perpetual, worldwide, non-exclusive, no-charge, "
     "royalty-free, irrevocable copyright license."),
    ("You must give any other recipients of the Work or Derivative Works a copy of this "
     "License, and you must cause any modified files to carry prominent notices."),
]
FINAL = "v_final"


def map_reduce_calls(chunks: list[str] = CHUNKS, max_tokens: int = 12) -> list[dict]:
    """len(chunks) summarize calls, a join of their summaries, and one combine call (whose
    output is FINAL): len(chunks) + 2 calls."""
    sampling = {"max_tokens": max_tokens, "min_tokens": max_tokens, "ignore_eos": True}
    maps = [{"id": f"map{i}", "name": "summarize", "template": SUMMARIZE,
             "inputs": {"chunk": chunk}, "outputs": {"summary": {"var": f"v_sum{i}"}},
             "sampling": sampling} for i, chunk in enumerate(chunks)]
    join = {"id": "join", "kind": "join", "sep": "\n",
            "parts": [{"var": f"v_sum{i}"} for i in range(len(chunks))],
            "output": {"var": "v_parts"}}
    reduce = {"id": "reduce", "name": "combine", "template": COMBINE,
              "inputs": {"summaries": {"var": "v_parts"}},
              "outputs": {"final": {"var": FINAL}}, "sampling": sampling}
    return [*maps, join, reduce]
