"""The shipped MiniWoB experience model, served by a real vLLM (CPU) server the way `dreamgym
serve` serves it (adapter merged into its base), answers held-out transitions exactly as the
in-process TransformersBackend does under greedy, schema-constrained decoding."""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from dreamgym_env.backends.default_model import miniwob_model_dir
from dreamgym_env.errors import ModelNotFoundError
from dreamgym_env.schema import parse_model_output
from helpers.fake_openai_server import free_port
from helpers.servers import VLLM_PYTHON, requires_vllm, stop, vllm_env, wait_until_healthy


def _shipped_model():
    try:
        return miniwob_model_dir()
    except ModelNotFoundError:
        return None


requires_shipped_model = pytest.mark.skipif(_shipped_model() is None, reason="this checkout ships no trained MiniWoB model")


@pytest.fixture(scope="module")
def served_shipped_model(tmp_path_factory):
    from dreamgym_env.serving import servable_model_dir, vllm_server_command

    merged = servable_model_dir(_shipped_model())
    port = free_port()
    log_path = tmp_path_factory.mktemp("logs") / "vllm_shipped.log"
    command = vllm_server_command(merged, port=port, enforce_eager=True, python=VLLM_PYTHON,
                                  extra_args=["--dtype", "float32"])
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=vllm_env(), start_new_session=True)
    try:
        wait_until_healthy(process, f"http://127.0.0.1:{port}/health", log_path)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        stop(process)


@pytest.mark.slow
@requires_vllm
@requires_shipped_model
def test_served_model_matches_transformers_backend_greedy(served_shipped_model):
    from dreamgym_env.backends.openai_backend import OpenAIBackend
    from dreamgym_env.backends.transformers_backend import TransformersBackend
    from dreamgym_env.sft.evaluate import generate_answers, test_examples
    from dreamgym_env.sft.train import MODEL_CARD

    model = _shipped_model()
    card = json.loads((model / MODEL_CARD).read_text())
    examples, schema, max_tokens = test_examples(card, max_per_group=4, seed=0)
    assert len(examples) == 8
    local = TransformersBackend(model, dtype="float32", max_batch_size=8)
    began = time.perf_counter()
    in_process, _, _ = generate_answers(local, examples, schema, max_tokens, batch_size=8)
    local_s = time.perf_counter() - began
    with OpenAIBackend(served_shipped_model, timeout_s=300, max_concurrency=8) as server:
        began = time.perf_counter()
        served, _, _ = generate_answers(server, examples, schema, max_tokens, batch_size=8)
        served_s = time.perf_counter() - began
    print(f"8 held-out transitions: TransformersBackend {local_s:.1f} s, vLLM server {served_s:.1f} s")
    assert all(served) and all(in_process)
    same = [parse_model_output(a, "patch") == parse_model_output(b, "patch") for a, b in zip(in_process, served)]
    assert all(same), [(a, b) for a, b, ok in zip(in_process, served, same) if not ok]
