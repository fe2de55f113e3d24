"""Experience-model backends behind one batched ``generate(requests)`` call.

``make_backend`` resolves what the env was given (an instance, a string, or nothing) into a
backend; with nothing it reads ``DREAMGYM_BACKEND``, ``DREAMGYM_BASE_URL``,
``DREAMGYM_MODEL`` and ``DREAMGYM_API_KEY`` and falls back to the embedded default model.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from dreamgym_env.backends.base import ExperienceModel, GenerationRequest, GenerationResult
from dreamgym_env.backends.scripted import ScriptedBackend

logger = logging.getLogger(__name__)

__all__ = [
    "ExperienceModel", "GenerationRequest", "GenerationResult", "ScriptedBackend",
    "make_backend", "BACKEND_KINDS",
]

BACKEND_KINDS = ("openai", "vllm", "transformers")

_shared: dict[tuple, ExperienceModel] = {}
_lock = threading.Lock()


def _build(kind: str, model: str | None, base_url: str | None, options: dict[str, Any]) -> ExperienceModel:
    if kind == "openai":
        from dreamgym_env.backends.openai_backend import OpenAIBackend

        if not base_url:
            raise ValueError("The openai backend needs a base URL (DREAMGYM_BASE_URL or 'openai:http://host:port/v1')")
        api_key = options.pop("api_key", None) or os.environ.get("DREAMGYM_API_KEY")
        return OpenAIBackend(base_url, model, api_key=api_key, **options)
    if kind == "vllm":
        from dreamgym_env.backends.vllm_backend import VLLMBackend

        return VLLMBackend(model, **options)
    if kind == "transformers":
        from dreamgym_env.backends.transformers_backend import TransformersBackend

        return TransformersBackend(model, **options)
    raise ValueError(f"Unknown backend kind {kind!r}; use one of {BACKEND_KINDS} or pass an ExperienceModel")


def _parse_spec(spec: str) -> tuple[str, str | None, str | None]:
    """``"openai:http://h:p/v1"``, ``"http://h:p/v1"``, ``"vllm:DIR"``, ``"transformers:DIR"``,
    ``"DIR"`` or ``"default"`` -> (kind, model, base_url)."""
    if spec == "default":
        return "transformers", None, None
    if spec.startswith(("http://", "https://")):
        return "openai", os.environ.get("DREAMGYM_MODEL"), spec
    kind, sep, rest = spec.partition(":")
    if sep and kind in BACKEND_KINDS:
        if kind == "openai":
            return kind, os.environ.get("DREAMGYM_MODEL"), rest
        return kind, rest or None, None
    return "transformers", spec, None


def make_backend(
    backend: ExperienceModel | str | None = None,
    *,
    default_model: str | None = None,
    shared: bool = True,
    **options: Any,
) -> ExperienceModel:
    """Resolve ``backend`` into an ExperienceModel.

    Args:
        backend: an ExperienceModel (returned as is), a spec string (see ``_parse_spec``), or
            None to read the ``DREAMGYM_*`` environment variables.
        default_model: model used when nothing else names one (a domain's trained default);
            None means the embedded SmolLM2-135M-Instruct base.
        shared: reuse one backend per configuration within the process, so that many envs
            (and ``gym.make`` calls) share one loaded model.
        options: keyword arguments of the backend class (e.g. ``max_concurrency``, ``device``).
    """
    if backend is not None and not isinstance(backend, str):
        if not callable(getattr(backend, "generate", None)):
            raise TypeError(f"backend must be an ExperienceModel or a string, got {type(backend).__name__}")
        return backend
    if backend is None:
        kind = os.environ.get("DREAMGYM_BACKEND", "").strip().lower()
        base_url = os.environ.get("DREAMGYM_BASE_URL") or None
        model = os.environ.get("DREAMGYM_MODEL") or None
        if not kind:
            kind = "openai" if base_url else "transformers"
        if kind != "openai" and model is None:
            model = default_model
    elif backend == "scripted":  # explicit only: the fake backend of the contract tests
        return ScriptedBackend()
    else:
        kind, model, base_url = _parse_spec(backend)
        if kind == "transformers" and model is None:
            model = default_model
    key = (kind, model, base_url, tuple(sorted((k, repr(v)) for k, v in options.items())))
    with _lock:
        if shared and key in _shared:
            return _shared[key]
        built = _build(kind, model, base_url, dict(options))
        where = f" at {base_url}" if base_url else ""
        logger.info("DreamGym experience model: %s backend, model %s%s", kind, getattr(built, "name", model), where)
        if shared:
            _shared[key] = built
        return built
