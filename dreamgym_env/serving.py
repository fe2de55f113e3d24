"""The command line that starts a vLLM OpenAI-compatible server for an experience model."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Sequence

from dreamgym_env.device import vllm_dtype_flag

#: Constrained decoding writes compact JSON (the separators of ``prompts.JSON_SEPARATORS``):
#: without it xgrammar lets a model pad its JSON with whitespace until max_tokens runs out.
STRUCTURED_OUTPUTS_CONFIG = {"backend": "xgrammar", "disable_any_whitespace": True}


def vllm_python() -> str:
    """The Python that has vLLM: ``DREAMGYM_VLLM_PYTHON`` (see scripts/install_vllm_cpu.sh),
    else this interpreter."""
    return os.environ.get("DREAMGYM_VLLM_PYTHON") or sys.executable


def vllm_server_command(
    model: str | os.PathLike,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    device: str = "cpu",
    max_model_len: int = 2048,
    served_model_name: str | None = None,
    enforce_eager: bool = False,
    python: str | None = None,
    extra_args: Sequence[str] = (),
) -> list[str]:
    """The argv of ``vllm.entrypoints.openai.api_server`` with the flags DreamGym needs."""
    model = Path(model)
    command = [
        python or vllm_python(), "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(model),
        "--served-model-name", served_model_name or model.name,
        "--host", host, "--port", str(port),
        "--max-model-len", str(max_model_len),
        "--dtype", vllm_dtype_flag(device),
        "--structured-outputs-config", json.dumps(STRUCTURED_OUTPUTS_CONFIG),
    ]
    if enforce_eager:
        command.append("--enforce-eager")
    return command + list(extra_args)


def vllm_server_env(device: str = "cpu") -> dict[str, str]:
    """Environment of the server process: offline hub; on CPU a 1 GiB KV cache by default."""
    env = dict(os.environ)
    env.setdefault("HF_HUB_OFFLINE", "1")
    if device == "cpu":
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    return env
