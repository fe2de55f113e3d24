"""The synthetic step's roofline on this machine: the fastest the experience model could serve.

A synthetic MiniWoB step is one prompt prefilled and one answer decoded by the 135M model. This
measures what the machine sustains (matrix products of the model's own shapes in each dtype, and
memory bandwidth), counts the floating-point work and the weight traffic of a step from the
model's config and the step's token counts, and prints, per batch size N of a vector env:

- compute bound: the step's work (prefill, then the answer's tokens, attention included) at the
  machine's peak matrix-product rate (the best of the model's shapes at 2,048 rows);
- weight-read bound: each decode step reads every weight once for the N sequences
  (speculative decoding, which checks several tokens a read, can beat it);
- roofline steps/s = N / (prefill time + answer tokens x max(decode compute, weight read));
- "N-row": the same with decode at the rate an N-row product of the model's shapes actually
  gets here (small products run far below peak): what batching N sequences alone can reach;
- given ``--measured N=steps/s`` (a served model's figures, fp32), its share of each.

Token counts default to rule v5 / prompt v5 (``python benchmarks/token_budget.py --sample 300
--prompt-version v5 --reasoning-rule v5``: prompt 267, answer 115, of which 41.5 tokens of
system text and template every prompt shares: prefix caching skips those).

    python benchmarks/serving_roofline.py --measured 1=0.10 8=0.39 32=0.47 --real-steps-per-s 17.3
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import time
from pathlib import Path

import torch

from dreamgym_env.device import cpu_description


def model_shapes(config: dict) -> dict[str, float]:
    """Parameters that multiply each token (per layer and head), from a Llama-style config."""
    h, inter, layers = config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]
    head_dim = config.get("head_dim", h // config["num_attention_heads"])
    q_dim, kv_dim = config["num_attention_heads"] * head_dim, config["num_key_value_heads"] * head_dim
    per_layer = h * q_dim + 2 * h * kv_dim + q_dim * h + 3 * h * inter
    head = h * config["vocab_size"]
    return {"body": layers * per_layer, "head": head, "layers": layers, "q_dim": q_dim,
            "weights": layers * per_layer + head}  # tied embeddings: the head is the embedding


def runs_per_second(fn, seconds: float) -> float:
    """How many times a second ``fn()`` runs, after three warm-up runs."""
    for _ in range(3):
        fn()
    reps, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        fn()
        reps += 1
    return reps / (time.perf_counter() - started)


def matmul_rate(m: int, k: int, n: int, dtype: torch.dtype, seconds: float = 1.0) -> float:
    """Sustained GFLOP/s of (m x k) @ (k x n) in ``dtype``."""
    a, b = torch.randn(m, k).to(dtype), torch.randn(k, n).to(dtype)
    return 2 * m * k * n * runs_per_second(lambda: a @ b, seconds) / 1e9


def bandwidth(megabytes: int = 512, seconds: float = 1.0) -> float:
    """GB/s of a large copy (bytes read + bytes written)."""
    src = torch.ones(megabytes * 2**20 // 4)
    dst = torch.empty_like(src)
    return 2 * src.numel() * src.element_size() * runs_per_second(lambda: dst.copy_(src), seconds) / 1e9


def batch_seconds(prefill_s: float, answer_tokens: float, decode_compute_s: float, read_s: float) -> float:
    """A batch's time: its prefill, then one decode step a token, each bound by compute or by
    reading the weights, whichever is slower."""
    return prefill_s + answer_tokens * max(decode_compute_s, read_s)


def default_config() -> dict:
    from dreamgym_env.backends.default_model import build_default_model

    return json.loads((build_default_model() / "config.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=None, help="a model's config.json (default: the shipped base model's)")
    parser.add_argument("--prompt-tokens", type=float, default=267.0)
    parser.add_argument("--answer-tokens", type=float, default=115.0)
    parser.add_argument("--shared-prefix", type=float, default=41.5, help="prompt tokens every step shares")
    parser.add_argument("--num-envs", type=int, nargs="+", default=[1, 8, 32, 128])
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--measured", nargs="*", default=[], metavar="N=STEPS_PER_S",
                        help="served figures to set beside the roofline (fp32 rows)")
    parser.add_argument("--real-steps-per-s", type=float, default=None, help="real env steps/s, for the x-real column")
    args = parser.parse_args()
    measured = {int(k): float(v) for k, v in (item.split("=", 1) for item in args.measured)}

    config = json.loads(Path(args.config).read_text()) if args.config else default_config()
    shape = model_shapes(config)
    h, inter = config["hidden_size"], config["intermediate_size"]
    torch.set_num_threads(os.cpu_count() or 1)
    print(f"machine: {cpu_description()}; torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"date {datetime.date.today()}; load average at start {os.getloadavg()[0]:.2f}")
    print(f"model: {shape['weights'] / 1e6:.1f}M multiplying parameters ({shape['body'] / 1e6:.1f}M in the layers, "
          f"{shape['head'] / 1e6:.1f}M in the tied head); step: prompt {args.prompt_tokens:g} tokens "
          f"({args.shared_prefix:g} shared), answer {args.answer_tokens:g}")
    bw = bandwidth()
    print(f"memory bandwidth (copy): {bw:.1f} GB/s")

    # attention: scores and values, 2 x 2 x q_dim x context per layer and token
    ctx_prefill = args.prompt_tokens / 2
    ctx_decode = args.prompt_tokens + args.answer_tokens / 2
    prefill_tokens = args.prompt_tokens - args.shared_prefix
    prefill_flop = prefill_tokens * 2 * (shape["body"] + shape["layers"] * 2 * shape["q_dim"] * ctx_prefill)
    prefill_flop += 2 * shape["head"]  # logits of the last prompt token only
    decode_flop_per_seq = 2 * (shape["weights"] + shape["layers"] * 2 * shape["q_dim"] * ctx_decode)

    print("\n| dtype | N | peak GFLOP/s | N-row GFLOP/s | compute-bound steps/s | weight-read-bound steps/s "
          "| roofline steps/s | N-row roofline | measured | share of roofline | share of N-row | roofline x real |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name in args.dtypes:
        dtype = getattr(torch, name)
        peak = max(matmul_rate(2048, h, inter, dtype), matmul_rate(2048, inter, h, dtype))
        for n in args.num_envs:
            n_row = min(matmul_rate(n, h, inter, dtype, 0.5), matmul_rate(n, inter, h, dtype, 0.5),
                        matmul_rate(n, h, config["vocab_size"], dtype, 0.5))
            prefill_s = n * prefill_flop / (peak * 1e9)
            read_s = shape["weights"] * dtype.itemsize / (bw * 1e9)  # one decode step's weight read
            decode_s, decode_n_row_s = (n * decode_flop_per_seq / (rate * 1e9) for rate in (peak, n_row))

            compute_only = n / batch_seconds(prefill_s, args.answer_tokens, decode_s, 0.0)
            read_only = n / (args.answer_tokens * read_s)
            roof = n / batch_seconds(prefill_s, args.answer_tokens, decode_s, read_s)
            roof_n = n / batch_seconds(prefill_s, args.answer_tokens, decode_n_row_s, read_s)
            got = measured.get(n) if name == "float32" else None
            cells = [f"{got:g}", f"{got / roof:.2f}", f"{got / roof_n:.2f}"] if got is not None else ["", "", ""]
            x_real = f"{roof / args.real_steps_per_s:.3f}" if args.real_steps_per_s else ""
            print(f"| {name} | {n} | {peak:.0f} | {n_row:.0f} | {compute_only:.2f} | {read_only:.2f} | {roof:.2f} "
                  f"| {roof_n:.2f} | {' | '.join(cells)} | {x_real} |", flush=True)


if __name__ == "__main__":
    main()
