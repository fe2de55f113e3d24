"""Device and dtype choice from the hardware at run time (never a hard-coded bf16)."""

from __future__ import annotations

import functools
import logging
from pathlib import Path

logger = logging.getLogger(__name__)


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags of this machine (empty where /proc/cpuinfo is missing)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def cpu_description() -> str:
    """CPU model, cores and the vector ISA flags that decide BLAS speed, for benchmark headers."""
    import os
    import platform

    model = platform.processor() or platform.machine()
    try:
        model = next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                      if l.startswith("model name")), model)
    except OSError:
        pass
    isa = [f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_tile") if f in cpu_flags()]
    return f"{model}, {os.cpu_count()} cores, ISA {' '.join(isa) or 'none of avx2/avx512/amx'}"


def cpu_has_fast_bf16() -> bool:
    """True where the CPU computes bf16 natively (AMX or AVX-512 BF16); on AVX2-only CPUs bf16
    was ~20x slower than fp32 in training here."""
    return bool({"amx_bf16", "avx512_bf16"} & cpu_flags())


def pick_device(device: str | None = None) -> str:
    """``device`` if given, else "cuda" when a GPU is visible, else "cpu"."""
    if device:
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def pick_dtype(device: str, dtype: str | None = None):
    """The torch dtype to run a model in on ``device``.

    Args:
        device: "cpu", "cuda" or "cuda:N".
        dtype: "float32", "bfloat16", "float16" or None/"auto" to choose from the hardware.
    """
    import torch

    if dtype not in (None, "auto"):
        return getattr(torch, dtype)
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_has_fast_bf16() else torch.float32


def vllm_dtype_flag(device: str = "cpu") -> str:
    """The ``--dtype`` to give vLLM: float32 on CPUs without native bf16."""
    if device == "cpu" and not cpu_has_fast_bf16():
        return "float32"
    return "auto"
