"""A tiny, randomly initialised Llama model with the embedded default model's tokenizer.

Random weights say nothing about fidelity; the model is for tests of serving, batching,
structured outputs and determinism, where a real model of any quality will do.
"""

from __future__ import annotations

import shutil
from pathlib import Path

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "generation_config.json",
)


def build_tiny_llama(out_dir: Path, *, hidden_size: int = 128, num_layers: int = 2, seed: int = 0) -> Path:
    """Save a random float32 ``LlamaForCausalLM`` with SmolLM2's tokenizer and chat template.

    The head size is 64, a size every vLLM attention backend (CPU included) supports.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from dreamgym_env.backends.default_model import build_default_model

    source = build_default_model()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in TOKENIZER_FILES:
        if (source / name).is_file():
            shutil.copy(source / name, out_dir / name)
    config = LlamaConfig(
        vocab_size=49152,
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=hidden_size // 64,
        num_key_value_heads=1,
        head_dim=64,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).to(torch.float32)
    model.config.dtype = "float32"
    model.save_pretrained(out_dir)
    return out_dir
