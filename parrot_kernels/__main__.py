"""`python -m parrot_kernels`: build (or find) Parrot's CPU kernels for this machine."""

import logging

from parrot_kernels import cpu_ops

logging.basicConfig(level=logging.INFO)
print("parrot CPU kernels:", "ready" if cpu_ops.load() else "not available (eager torch path)")
