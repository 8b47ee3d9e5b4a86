"""Start `parrot serve` as a subprocess and wait until it answers: the bench, the tests and
benchmarks/ start their servers with it (it is no part of the server)."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

_LISTENING = re.compile(r"listening on (http://\S+?:\d+)")


class ServerProcess:
    """`python -m parrot serve --port 0 <args>`; `start()` returns its base URL.

    Output goes to a log file (`log_path`), which is also where the URL is read
    from, so a free port is picked by the server itself, race-free.
    """

    def __init__(self, args: list[str], *, env: dict[str, str] | None = None,
                 log_path: str | Path | None = None) -> None:
        self.args = list(args)
        self.env = {**os.environ, **(env or {})}
        self.log_path = Path(log_path or tempfile.mkstemp(prefix="parrot-serve-", suffix=".log")[1])
        self.proc: subprocess.Popen | None = None
        self.url: str | None = None

    def start(self, timeout: float = 300.0) -> str:
        cmd = [sys.executable, "-m", "parrot", "serve", "--port", "0", *self.args]
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            match = _LISTENING.search(self.log())
            if match and _is_healthy(match.group(1)):
                self.url = match.group(1)
                return self.url
            time.sleep(0.2)
        self.stop()
        raise TimeoutError(f"server did not become healthy in {timeout:.0f} s:\n{self.log()}")

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM (graceful), then SIGKILL after `timeout`. Returns the exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def __enter__(self) -> ServerProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _is_healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False
