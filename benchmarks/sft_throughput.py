"""SFT training throughput of the 135M base on this machine, side by side: full fine-tuning,
LoRA on every layer, LoRA on the top N layers (the default), same batch, same run; with
``--cpu-bf16``, each mode also under CPU bf16 autocast (fp32 weights), to tell whether a CPU with
AVX-512 BF16 or AMX would train faster that way.

    python benchmarks/sft_throughput.py --batch 8 --length 384 --answer 88 --top 12
    python benchmarks/sft_throughput.py --cpu-bf16
"""

from __future__ import annotations

import argparse
import time

import torch


def tokens_per_s(mode: str, top: int, batch: int, length: int, answer: int, steps: int,
                 bf16: bool = False) -> float:
    from transformers import AutoModelForCausalLM

    from dreamgym_env.backends.default_model import build_default_model
    from dreamgym_env.sft.train import LORA_TARGETS

    model = AutoModelForCausalLM.from_pretrained(build_default_model(), dtype=torch.float32)
    if mode != "full":
        from peft import LoraConfig, get_peft_model

        n = model.config.num_hidden_layers
        layers = list(range(n - top, n)) if mode == "lora-top" else None
        model = get_peft_model(model, LoraConfig(r=64, lora_alpha=128, target_modules=LORA_TARGETS,
                                                 layers_to_transform=layers))
        model = model.get_base_model()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    ids = torch.randint(0, model.config.vocab_size, (batch, length), generator=torch.Generator().manual_seed(0))
    times = []
    for _ in range(steps + 1):
        started = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            hidden = model.model(input_ids=ids).last_hidden_state
            logits = model.lm_head(hidden[:, -answer - 1 : -1])  # the LM head on answer positions only
        loss = torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), ids[:, -answer:].reshape(-1))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        times.append(time.perf_counter() - started)
    return batch * length / min(times[1:])  # the first step warms up


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--length", type=int, default=384)
    parser.add_argument("--answer", type=int, default=88)
    parser.add_argument("--top", type=int, default=12, help="layers adapted in lora-top mode")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--cpu-bf16", action="store_true", help="also measure each mode under CPU bf16 autocast")
    args = parser.parse_args()
    from dreamgym_env.experiments.machine import describe_machine

    torch.manual_seed(0)
    runs = [(m, bf16) for m in ("full", "lora-all", "lora-top") for bf16 in ((False, True) if args.cpu_bf16 else (False,))]
    results = {run: tokens_per_s(run[0], args.top, args.batch, args.length, args.answer, args.steps, bf16=run[1])
               for run in runs}
    print(f"{describe_machine()}; threads {torch.get_num_threads()}, batch {args.batch}x{args.length}, "
          f"answer {args.answer} tokens")
    print("| mode | precision | tokens/s | vs full fp32 |\n|---|---|---|---|")
    for (mode, bf16), value in results.items():
        name = f"{mode} ({args.top} layers)" if mode == "lora-top" else mode
        print(f"| {name} | {'bf16 autocast' if bf16 else 'fp32'} | {value:.0f} | {value / results[('full', False)]:.2f}x |")


if __name__ == "__main__":
    main()
