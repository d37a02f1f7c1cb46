"""Start and stop a local OpenAI-compatible server for the integration tests (vLLM, llama.cpp).

The server runs in its own session (process group) so that stopping it also stops the workers it
forks; an ``atexit`` hook stops it even when pytest is interrupted.
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

__all__ = ["free_port", "log_tail", "served_models", "serving", "stop_group"]


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def served_models(base_url: str) -> list[str]:
    """The model ids ``GET {base_url}/models`` lists."""
    with urllib.request.urlopen(f"{base_url}/models", timeout=5) as response:
        return [m["id"] for m in json.load(response)["data"]]


def stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM the server's whole process group, then SIGKILL what is left after a grace period."""
    pgid = proc.pid  # start_new_session=True: the server leads its own group
    for sig, grace in ((signal.SIGTERM, 30.0), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            try:
                proc.wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(pgid, 0)  # anyone left in the group?
            except ProcessLookupError:
                return


def log_tail(path: Path | None, lines: int = 40) -> str:
    if path is None or not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


@contextmanager
def serving(
    cmd: Sequence[str],
    base_url: str,
    name: str,
    log: Path,
    timeout_s: float,
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    label: str = "server",
) -> Iterator[float]:
    """Run ``cmd`` until ``name`` is listed at ``base_url``; yields the seconds that took; always stopped.

    A server that exits early or is not ready within ``timeout_s`` fails the test with its log.
    """
    started = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(
            list(cmd), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, cwd=cwd, env=dict(env) if env is not None else None,
        )
    atexit.register(stop_group, proc)  # even if pytest is interrupted
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"{label} exited with {proc.returncode} before it was ready.\n{log_tail(log)}")
            try:
                if name in served_models(base_url):
                    break
            except OSError:
                pass
            if time.perf_counter() - started > timeout_s:
                pytest.fail(f"{label} not ready after {timeout_s:.0f} s.\n{log_tail(log)}")
            time.sleep(1.0)
        yield time.perf_counter() - started
    finally:
        stop_group(proc)
