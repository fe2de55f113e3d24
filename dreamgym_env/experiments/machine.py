"""What machine an experiment ran on, for its report."""

from __future__ import annotations

import os
import platform


def describe_machine() -> str:
    """CPU model, core count and GPU, e.g. ``AMD EPYC 7B13, 2 cores, no GPU``."""
    import torch

    model = platform.processor() or platform.machine()
    try:
        model = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{model}, {os.cpu_count()} cores, {gpu}"
