"""What machine an experiment ran on, for its report."""

from __future__ import annotations

import os
import platform


def vector_isa() -> str:
    """The widest vector instructions of this CPU that matter for speed here: "AVX-512 + AMX",
    "AVX-512", "AVX2" or "no AVX2". Two machines with the same model name ("AMD EPYC") can differ
    in this and then train at different speeds."""
    from dreamgym_env.device import cpu_flags

    flags = cpu_flags()
    if "avx512f" in flags:
        return "AVX-512 + AMX" if "amx_tile" in flags else "AVX-512"
    return "AVX2" if "avx2" in flags else "no AVX2"


def describe_machine() -> str:
    """CPU model, vector ISA, core count and GPU, e.g. ``AMD EPYC (AVX2), 2 cores, no GPU``."""
    import torch

    model = platform.processor() or platform.machine()
    try:
        model = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{model} ({vector_isa()}), {os.cpu_count()} cores, {gpu}"
