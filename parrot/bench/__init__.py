"""`parrot bench apps`: whole LLM applications run three ways against real servers.

Each workload (`parrot/bench/workloads/`) is written once, against the small `App`
interface of `parrot/bench/runtime.py`, and run in three modes:

- **parrot**: as a Semantic-Variable program over the native API (`P.Session`), the
  whole DAG handed to the server at once;
- **baseline**: the same LLM calls through the OpenAI-compatible API, one request per
  call, each sent only when its inputs have come back to the client (independent calls
  concurrently, as a LangChain `abatch` would), prefix cache OFF;
- **baseline+cache**: the same, prefix cache ON.

`runner.py` starts the servers (one at a time), repeats each run with a fresh prefix tag,
and reads the engine counters around every run; `report.py` writes the table and JSON,
`plots.py` the PNGs.
"""
