"""The terms the client and the server share; neither side owns them.

- `template.py`: the template grammar (`{{input:x}}`, `{{output:y}}`, role blocks), parsed once;
- `chat_render.py`: role blocks lowered through a chat template (the manager's and the bench
  baseline's one renderer);
- `criteria.py`: the performance objective a `get` carries (latency / throughput);
- `sampling.py`: the names of an output's sampling settings and constraints in the native API.

Pure Python, no third-party import: it ships in the torch-free `parrot-client` distribution
(docs/packages.md), and the manager, server and bench import it from there. The public API
re-exports what programs use (`P.Criteria`, `P.Template`, ...) from `parrot.program`.
"""
