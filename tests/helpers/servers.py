"""Real servers for tests: a vLLM OpenAI-compatible server and a ``chroma run`` server, each a
subprocess in a session of its own, stopped with everything it spawned."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Iterator, Sequence

import httpx
import pytest

from helpers.fake_openai_server import free_port

VLLM_PYTHON = os.environ.get("DREAMGYM_VLLM_PYTHON", "")
START_DEADLINE_S = 300


def vllm_importable() -> bool:
    if not VLLM_PYTHON or not Path(VLLM_PYTHON).exists():
        return False
    probe = "import importlib.util, sys; sys.exit(importlib.util.find_spec('vllm') is None)"
    return subprocess.run([VLLM_PYTHON, "-c", probe], capture_output=True).returncode == 0


requires_vllm = pytest.mark.skipif(
    not vllm_importable(),
    reason="set DREAMGYM_VLLM_PYTHON to a python that can import vllm (scripts/install_vllm_cpu.sh prints one)",
)


def vllm_env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": "1"}


def tail(path: Path, n: int = 4000) -> str:
    return path.read_text(errors="replace")[-n:]


def wait_until_healthy(process: subprocess.Popen, url: str, log_path: Path, deadline_s: float = START_DEADLINE_S) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"server exited with {process.returncode}:\n{tail(log_path)}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    pytest.fail(f"server not healthy after {deadline_s} s:\n{tail(log_path)}")


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
    try:  # engine processes left behind in the session
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@contextlib.contextmanager
def running(command: Sequence[str], health_url: str, log_path: Path, env: dict[str, str] | None = None) -> Iterator[None]:
    """Run ``command`` until ``health_url`` answers 200; stop it (and its children) on exit."""
    with open(log_path, "wb") as log:
        process = subprocess.Popen(list(command), stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        wait_until_healthy(process, health_url, log_path)
        yield
    finally:
        stop(process)


@contextlib.contextmanager
def chroma_server(db: Path, log_path: Path) -> Iterator[str]:
    """A ``chroma run`` server on a free port; its URL."""
    exe = shutil.which("chroma")
    if exe is None:
        pytest.skip("the chroma CLI is not installed")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([exe, "run", "--path", str(db), "--host", "127.0.0.1", "--port", str(port)],
                                   stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/api/v2/heartbeat", timeout=1):
                    break
            except OSError:
                if process.poll() is not None or time.time() > deadline:
                    pytest.fail(f"chroma run did not start: {tail(log_path, 2000)}")
                time.sleep(0.2)
        yield url
    finally:
        stop(process)
