"""TransformersBackend: batched generation with Hugging Face transformers, CPU or GPU.

JSON-schema requests are constrained with xgrammar's logits processor when xgrammar is
installed (it ships with vLLM), so even an untrained model writes parseable output.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import defaultdict
from typing import Any, Sequence

from dreamgym_env.backends.base import GenerationRequest, GenerationResult
from dreamgym_env.device import pick_device, pick_dtype
from dreamgym_env.prompts import JSON_SEPARATORS

logger = logging.getLogger(__name__)


def _is_xgrammar_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("xgrammar") is not None


def load_merged_model(location: Any, dtype: Any) -> tuple[Any, Any]:
    """(model, tokenizer) of a :class:`~dreamgym_env.backends.default_model.ModelLocation`, a
    LoRA adapter merged into its base (merged in fp32, then cast to ``dtype``)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer_dir = location.path if (location.path / "tokenizer_config.json").is_file() else location.base_path
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    if location.adapter_config is None:
        return AutoModelForCausalLM.from_pretrained(location.base_path, dtype=dtype), tokenizer
    from peft import PeftModel

    model = AutoModelForCausalLM.from_pretrained(location.base_path, dtype=torch.float32)
    model = PeftModel.from_pretrained(model, location.path).merge_and_unload()
    target = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    return model.to(target), tokenizer


class TransformersBackend:
    """An in-process Hugging Face causal LM answering chat requests in batches.

    Args:
        model: a model directory (or a LoRA adapter directory, whose base is loaded from its
            ``adapter_config.json``). None builds and uses the embedded default model.
        device: "cpu", "cuda"...; None picks a GPU when one is visible.
        dtype: "float32", "bfloat16"...; None picks from the hardware (fp32 on AVX2-only CPUs).
        max_batch_size: requests generated together in one forward pass.
        structured_outputs: constrain JSON-schema requests with xgrammar when available.
    """

    def __init__(
        self,
        model: str | os.PathLike | None = None,
        *,
        device: str | None = None,
        dtype: str | None = None,
        max_batch_size: int = 16,
        structured_outputs: bool = True,
    ):
        import torch
        import transformers  # noqa: F401  (a missing install fails here, before the model is resolved)

        from dreamgym_env.backends.default_model import resolve_model

        location = resolve_model(model)
        self.device = pick_device(device)
        self.dtype = pick_dtype(self.device, dtype)
        self.model, self.tokenizer = load_merged_model(location, self.dtype)
        self.model.to(self.device).eval()
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.name = location.name
        self.prompt_version = location.prompt_version  # the chat template the model was trained on
        self.model_path = location.path
        self.max_batch_size = max_batch_size
        self.structured_outputs = structured_outputs and _is_xgrammar_available()
        self._grammar_compiler: Any = None
        self._grammars: dict[str, Any] = {}
        self._torch = torch
        logger.info(
            "TransformersBackend: %s on %s (%s), structured outputs %s",
            self.name, self.device, str(self.dtype).removeprefix("torch."),
            "on (xgrammar)" if self.structured_outputs else "off",
        )

    # -- structured outputs -------------------------------------------------------------
    def _compiled_grammar(self, schema: dict[str, Any]) -> Any:
        import xgrammar as xgr

        if self._grammar_compiler is None:
            info = xgr.TokenizerInfo.from_huggingface(
                self.tokenizer, vocab_size=self.model.config.vocab_size
            )
            self._grammar_compiler = xgr.GrammarCompiler(info)
        key = json.dumps(schema)  # key order matters: properties are generated in this order
        if key not in self._grammars:
            started = time.perf_counter()
            self._grammars[key] = self._grammar_compiler.compile_json_schema(
                key, any_whitespace=False, separators=JSON_SEPARATORS
            )
            logger.debug("compiled a JSON-schema grammar in %.2f s", time.perf_counter() - started)
        return self._grammars[key]

    def _logits_processors(self, chunk: Sequence[GenerationRequest]) -> list[Any]:
        if not self.structured_outputs or not any(r.json_schema for r in chunk):
            return []
        if not all(r.json_schema for r in chunk):
            raise ValueError("mixed structured and free requests in one batch")
        import xgrammar as xgr

        return [xgr.contrib.hf.LogitsProcessor([self._compiled_grammar(r.json_schema) for r in chunk])]

    # -- generation ---------------------------------------------------------------------
    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        results: list[GenerationResult | None] = [None] * len(requests)
        groups: dict[tuple, list[int]] = defaultdict(list)
        for i, r in enumerate(requests):
            sampled = r.temperature > 0
            # Sampled requests with a seed run alone so that the seed alone fixes the output.
            key = (sampled, r.temperature, r.top_p, r.seed if sampled else None,
                   r.json_schema is not None, i if sampled and r.seed is not None else None)
            groups[key].append(i)
        for indices in groups.values():
            for start in range(0, len(indices), self.max_batch_size):
                chunk_ids = indices[start : start + self.max_batch_size]
                chunk = [requests[i] for i in chunk_ids]
                try:
                    outs = self._generate_chunk(chunk)
                except Exception as exc:  # noqa: BLE001 - reported per request
                    logger.exception("generation failed")
                    outs = [GenerationResult(error=f"{type(exc).__name__}: {exc}") for _ in chunk]
                for i, out in zip(chunk_ids, outs):
                    results[i] = out
        return [r for r in results if r is not None]

    def _generate_chunk(self, chunk: Sequence[GenerationRequest]) -> list[GenerationResult]:
        torch = self._torch
        start = time.perf_counter()
        prompts = [
            self.tokenizer.apply_chat_template(r.messages, tokenize=False, add_generation_prompt=True)
            for r in chunk
        ]
        batch = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        batch = {k: v.to(self.device) for k, v in batch.items()}
        first = chunk[0]
        sampled = first.temperature > 0
        if sampled and first.seed is not None:
            torch.manual_seed(first.seed)
        kwargs: dict[str, Any] = dict(
            max_new_tokens=max(r.max_tokens for r in chunk),
            do_sample=sampled,
            pad_token_id=self.tokenizer.pad_token_id,
            logits_processor=self._logits_processors(chunk),
        )
        if sampled:
            kwargs.update(temperature=first.temperature, top_p=first.top_p)
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        with torch.inference_mode():
            out = self.model.generate(**batch, **kwargs)
        new_tokens = out[:, batch["input_ids"].shape[1] :]
        latency = time.perf_counter() - start
        results = []
        for row, request, mask in zip(new_tokens, chunk, batch["attention_mask"]):
            ids = row[: request.max_tokens].tolist()
            text = self.tokenizer.decode(ids, skip_special_tokens=True)
            for stop in request.stop or []:
                cut = text.find(stop)
                if cut >= 0:
                    text = text[:cut]
            n_completion = sum(1 for t in ids if t != self.tokenizer.pad_token_id)
            results.append(
                GenerationResult(text, latency, int(mask.sum()), n_completion)
            )
        return results

    def close(self) -> None:
        self.model = None  # type: ignore[assignment]
