"""Memory and speed of ``dreamgym sft`` at 135M, 1B and 8B: predicted for every mode, measured
on the hardware at hand.

Shapes are Llama-shaped configs with random weights (nothing comes from a hub): SmolLM2-135M,
Llama-3.2-1B, Llama-3.1-8B. For each, the table gives the parameters and the bytes that weights,
gradients, AdamW state, saved activations and the answer-token logits take in each mode:

- ``lora``: the base frozen (bf16 on GPUs, fp32 on CPUs), a rank-r fp32 adapter on the top
  ``--lora-layers`` layers (all with 0); backward stops below them, so only they keep activations;
- ``lora+ckpt``: the same with gradient checkpointing (a layer keeps its input; one layer at a
  time is recomputed whole);
- ``full/N``: every weight trained, fp32 master weights, gradients and AdamW state sharded over N
  GPUs by FSDP (ZeRO-3; N = 1 is plain), with and without gradient checkpointing.

Activations: the bytes autograd saves per token and layer are linear in (hidden, kv width,
intermediate): this script fits that line on tiny configs (counting the saved tensors, in
seconds, on the CPU), separately for full and LoRA training and for the compute dtype, then
predicts the large shapes with it. ``--measure SHAPE`` runs real training steps of a shape on
this device and prints measured tokens/s and memory beside the prediction: on CUDA the allocator's
peak (``max_memory_allocated``), on CPU the tensors' own bytes (parameters, gradients, optimizer
state and the peak of saved activations; the allocator's overhead is not seen there).

    python benchmarks/sft_scale.py --predict-for gpu        # the table for GPUs (prediction only)
    python benchmarks/sft_scale.py --measure 135m --steps 3 # plus measured figures here
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import time
from dataclasses import dataclass

from dreamgym_env.sft.train import LORA_TARGETS

GiB = 1024**3


@dataclass(frozen=True)
class Shape:
    name: str
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int
    tied: bool

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def kv_width(self) -> int:
        return self.kv_heads * self.head_dim

    def linear_shapes(self) -> list[tuple[int, int]]:
        """(in, out) of the seven adapted linears of one layer."""
        h, kv, i = self.hidden, self.kv_width, self.intermediate
        return [(h, h), (h, kv), (h, kv), (h, h), (h, i), (h, i), (i, h)]

    def layer_params(self) -> int:
        return sum(a * b for a, b in self.linear_shapes()) + 2 * self.hidden

    def params(self) -> int:
        embed = self.vocab * self.hidden
        return embed * (1 if self.tied else 2) + self.layers * self.layer_params() + self.hidden

    def lora_params(self, rank: int, layers: int) -> int:
        return layers * sum(rank * (a + b) for a, b in self.linear_shapes())

    def config(self):
        from transformers import LlamaConfig

        return LlamaConfig(vocab_size=self.vocab, hidden_size=self.hidden, intermediate_size=self.intermediate,
                           num_hidden_layers=self.layers, num_attention_heads=self.heads,
                           num_key_value_heads=self.kv_heads, head_dim=self.head_dim,
                           tie_word_embeddings=self.tied, max_position_embeddings=4096)


SHAPES = {
    "135m": Shape("SmolLM2-135M", 576, 1536, 30, 9, 3, 49152, True),
    "1b": Shape("Llama-3.2-1B", 2048, 8192, 16, 32, 8, 128256, True),
    "8b": Shape("Llama-3.1-8B", 4096, 14336, 32, 32, 8, 128256, False),
}


# -- activations: a line fitted on tiny configs -----------------------------------------------------

@contextlib.contextmanager
def counting_saved_tensors(model):
    """Within it, autograd's saved tensors are counted: yields a dict storage -> bytes, each
    storage once, none of ``model``'s parameters or buffers."""
    import torch

    skip = {p.untyped_storage().data_ptr() for p in model.parameters()}
    skip |= {b.untyped_storage().data_ptr() for b in model.buffers()}
    seen: dict[int, int] = {}

    def pack(t):
        key = t.untyped_storage().data_ptr()
        if key not in skip:
            seen[key] = max(seen.get(key, 0), t.untyped_storage().nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        yield seen


def saved_bytes_per_token(shape: Shape, *, lora: bool, target: str, tokens: int = 64, layers: int | None = None,
                          rank: int = 8) -> float:
    """Bytes autograd saves per token for ``shape`` (all its layers, or ``layers``), counting each
    saved storage once and no parameter. ``target`` "cpu": fp32 throughout, as ``dreamgym sft``
    trains on AVX2 CPUs; "gpu": as on GPUs (LoRA: a bf16 base, fp32 adapters, bf16 autocast; full:
    bf16 compute, as FSDP's mixed precision gives)."""
    import torch
    from transformers import LlamaForCausalLM

    cfg = shape.config()
    if layers is not None:
        cfg.num_hidden_layers = layers
    cfg._attn_implementation = "sdpa"
    autocast = target == "gpu" and lora
    model = LlamaForCausalLM(cfg).to(torch.bfloat16 if target == "gpu" else torch.float32)
    if lora:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=LORA_TARGETS))
    model.train()
    inner = model.get_base_model() if lora else model
    ids = torch.randint(0, cfg.vocab_size, (1, tokens))
    with counting_saved_tensors(model) as seen, torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        inner.model(input_ids=ids)
    return sum(seen.values()) / tokens


@dataclass
class ActivationLine:
    """Saved bytes per token and layer = a_h * hidden + a_kv * kv width + a_i * intermediate + c."""

    a_h: float
    a_kv: float
    a_i: float
    c: float

    def per_layer(self, shape: Shape) -> float:
        return self.a_h * shape.hidden + self.a_kv * shape.kv_width + self.a_i * shape.intermediate + self.c


def fit_activation_line(*, lora: bool, target: str) -> ActivationLine:
    """The line through four tiny configs (one layer's bytes: two layers minus one)."""
    def layer(h, i, heads, kv):
        s = Shape("tiny", h, i, 1, heads, kv, 1000, True)
        return (saved_bytes_per_token(s, lora=lora, target=target, layers=2)
                - saved_bytes_per_token(s, lora=lora, target=target, layers=1))

    base = layer(256, 512, 4, 2)  # kv width 128
    more_i = layer(256, 1024, 4, 2)
    less_kv = layer(256, 512, 4, 1)  # kv width 64
    more_h = layer(512, 512, 4, 2)  # hidden 512, kv width 256
    a_i = (more_i - base) / 512
    a_kv = (base - less_kv) / 64
    a_h = (more_h - base - a_kv * 128) / 256
    c = base - a_h * 256 - a_kv * 128 - a_i * 512
    return ActivationLine(a_h, a_kv, a_i, c)


# -- the memory model -----------------------------------------------------------------------------

def predict(shape: Shape, mode: str, *, tokens: int, answer_share: float, rank: int, lora_layers: int,
            gpus: int, line: ActivationLine, base_bytes: int, compute_bytes: int) -> dict[str, float]:
    """Bytes per device of each part for one optimizer step of ``tokens`` tokens per device."""
    p = shape.params()
    ckpt = mode.endswith("+ckpt")
    if mode.startswith("lora"):
        k = lora_layers or shape.layers
        trainable = shape.lora_params(rank, k)
        weights = p * base_bytes + trainable * 4
        grads, optim = trainable * 4, trainable * 8
        layers_kept = k
    else:  # full, FSDP over `gpus`: fp32 master weights, gradients and AdamW state sharded
        weights = p * 4 / gpus + (shape.layer_params() * 4 * 2 if gpus > 1 else 0)  # + two gathered layers
        grads, optim = p * 4 / gpus, p * 8 / gpus
        layers_kept = shape.layers
    per_layer = line.per_layer(shape)
    if ckpt:  # each kept layer saves its input; one layer is recomputed whole at a time
        activations = tokens * (layers_kept * shape.hidden * compute_bytes + per_layer)
    else:
        activations = tokens * layers_kept * per_layer
    logits = tokens * answer_share * shape.vocab * 4 * 3  # fp32 logits, their softmax and its gradient
    return {"weights": weights, "grads": grads, "optimizer": optim, "activations": activations, "logits": logits,
            "total": weights + grads + optim + activations + logits}


# -- measured -------------------------------------------------------------------------------------

def measure(shape: Shape, *, mode: str, tokens: int, answer_share: float, rank: int, lora_layers: int,
            steps: int, device: str) -> dict[str, float]:
    """Train ``steps`` steps of random tokens through dreamgym sft's loss; tokens/s and memory."""
    import torch
    from transformers import LlamaForCausalLM

    from dreamgym_env.sft.data import IGNORE, STATE
    from dreamgym_env.sft.train import bf16_autocast, token_losses

    autocast = bf16_autocast(device, "auto")
    lora = mode.startswith("lora")
    base_dtype = torch.bfloat16 if lora and device.startswith("cuda") else torch.float32
    cfg = shape.config()
    cfg._attn_implementation = "sdpa"
    with torch.device(device):
        model = LlamaForCausalLM(cfg).to(base_dtype)
    if mode.endswith("+ckpt"):
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if lora:
        from peft import LoraConfig, get_peft_model

        k = lora_layers or shape.layers
        model = get_peft_model(model, LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=LORA_TARGETS,
                                                 layers_to_transform=list(range(shape.layers - k, shape.layers))))
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-5)
    ids = torch.randint(0, cfg.vocab_size, (1, tokens), device=device)
    mask = torch.full((1, tokens), IGNORE, device=device)
    mask[0, int(tokens * (1 - answer_share)):] = STATE
    peak_saved = 0
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(steps):
        started = time.perf_counter()
        with counting_saved_tensors(model) as seen:
            nll, *_ = token_losses(model, ids, None, mask, autocast=autocast)
        nll.mean().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=False)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
        peak_saved = max(peak_saved, sum(seen.values()))
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    grads = sum(p.grad.numel() * p.grad.element_size() for p in trainable if p.grad is not None)
    optim = sum(v.numel() * v.element_size() for s in optimizer.state.values() for v in s.values() if torch.is_tensor(v))
    out = {"tokens_per_s": tokens / min(times[1:] or times), "weights": weights, "grads": grads, "optimizer": optim,
           "saved": peak_saved, "tensors_total": weights + grads + optim + peak_saved}
    if device.startswith("cuda"):
        out["allocator_peak"] = torch.cuda.max_memory_allocated()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--tokens", type=int, default=4096, help="tokens per device per optimizer step")
    parser.add_argument("--answer-share", type=float, default=0.27, help="share of tokens that are answer (loss) tokens")
    parser.add_argument("--lora-rank", type=int, default=64)
    parser.add_argument("--lora-layers", type=int, default=12, help="adapted top layers (0: all)")
    parser.add_argument("--gpus", nargs="+", type=int, default=[1, 8], help="FSDP group sizes for full training")
    parser.add_argument("--device", default=None, help="where to measure (default: cuda when visible)")
    parser.add_argument("--predict-for", choices=["here", "gpu", "cpu"], default="here",
                        help="the precision the table assumes: GPUs (bf16) or CPUs (fp32); 'here': this device's")
    parser.add_argument("--measure", nargs="*", default=[], choices=list(SHAPES), help="shapes to train here")
    parser.add_argument("--measure-modes", nargs="+", default=["lora", "full/1"])
    parser.add_argument("--measure-tokens", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()

    import torch

    from dreamgym_env.device import cpu_description, pick_device

    device = pick_device(args.device)
    gpu = torch.cuda.get_device_name() if device.startswith("cuda") else "none"
    print(f"sft_scale: {cpu_description()}; GPU {gpu}; python {platform.python_version()}, torch {torch.__version__}")
    on_gpu = device.startswith("cuda")
    target = ("gpu" if on_gpu else "cpu") if args.predict_for == "here" else args.predict_for
    if args.measure and target != ("gpu" if on_gpu else "cpu"):
        parser.error(f"--measure compares with a prediction for this device: leave --predict-for at 'here'")
    base_bytes = 2 if target == "gpu" else 4
    lines = {kind: fit_activation_line(lora=kind == "lora", target=target) for kind in ("lora", "full")}
    for kind, line in lines.items():
        print(f"saved activations, {kind}, as on {target}s: {line.a_h:.1f} B x hidden + {line.a_kv:.1f} B x kv width + "
              f"{line.a_i:.1f} B x intermediate + {line.c:.0f} B per token and layer (fitted on tiny configs)")
    modes = ["lora", "lora+ckpt"] + [f"full/{n}{c}" for n in args.gpus for c in ("", "+ckpt")]
    print(f"\nPredicted GiB per device, {args.tokens} tokens a device a step ({args.answer_share:.0%} answer), "
          f"LoRA rank {args.lora_rank} on the top {args.lora_layers or 'all'} layers; as on {target}s "
          f"({'bf16 base and compute' if target == 'gpu' else 'fp32'})\n")
    print("| shape | params | mode | weights | grads | AdamW | activations | logits | total |")
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|")
    for name in args.shapes:
        shape = SHAPES[name]
        for mode in modes:
            gpus = int(mode.split("/")[1].split("+")[0]) if mode.startswith("full") else 1
            line = lines["lora" if mode.startswith("lora") else "full"]
            p = predict(shape, mode, tokens=args.tokens, answer_share=args.answer_share, rank=args.lora_rank,
                        lora_layers=args.lora_layers, gpus=gpus, line=line, base_bytes=base_bytes,
                        compute_bytes=base_bytes)
            print(f"| {shape.name} | {shape.params() / 1e9:.2f}B | {mode} | " + " | ".join(
                f"{p[k] / GiB:.2f}" for k in ("weights", "grads", "optimizer", "activations", "logits", "total")) + " |")
    if not args.measure:
        return
    print(f"\nMeasured on {device} ({args.measure_tokens} tokens a step, best of {args.steps} steps after the first)\n")
    print("| shape | mode | tokens/s | measured GiB | predicted GiB | predicted / measured |")
    print("|---|---|---:|---:|---:|---:|")
    for name in args.measure:
        shape = SHAPES[name]
        for mode in args.measure_modes:
            got = measure(shape, mode=mode, tokens=args.measure_tokens, answer_share=args.answer_share,
                          rank=args.lora_rank, lora_layers=args.lora_layers, steps=args.steps, device=device)
            line = lines["lora" if mode.startswith("lora") else "full"]
            p = predict(shape, mode, tokens=args.measure_tokens, answer_share=args.answer_share, rank=args.lora_rank,
                        lora_layers=args.lora_layers, gpus=1, line=line, base_bytes=base_bytes,
                        compute_bytes=base_bytes)
            measured = got.get("allocator_peak", got["tensors_total"])
            predicted = p["total"]
            print(f"| {shape.name} | {mode} | {got['tokens_per_s']:.0f} | {measured / GiB:.3f} | {predicted / GiB:.3f} | "
                  f"{predicted / measured:.2f} |")


if __name__ == "__main__":
    main()
