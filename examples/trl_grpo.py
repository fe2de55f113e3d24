"""GRPO with TRL on a DreamGym env, the env's action verbs as the policy's tools.

    python examples/trl_grpo.py --verbs click,stop                # WebArena, scripted backend: ~75 s on 2 CPU cores
    python examples/trl_grpo.py                                   # every WebArena verb as a tool: ~3.5 min
    python examples/trl_grpo.py --env DreamGym-MiniWoB-v0 --backend http://127.0.0.1:8000/v1 --buffer ""
    python examples/trl_grpo.py --policy_dir /models/my-instruct-model --warmup_steps 0 --max_steps 200

What it does, in order:
1. Builds a tiny policy locally (no model hub): a random 2-layer Llama with the tokenizer of the
   embedded SmolLM2 model and TRL's Qwen2.5 chat template, which renders and parses tool calls.
   A random model never emits a tool call, so a short supervised warm-up teaches it the
   tool-call *format* on the env's own prompts: mostly ``stop``, sometimes ``click``, sometimes
   plain text, so the rewards of a group differ and GRPO has something to learn. Pass a real
   instruct model with ``--policy_dir`` and ``--warmup_steps 0`` instead.
2. Makes a ``environment_factory`` class for the env id (``make_tool_env``): one tool per verb.
3. Runs ``GRPOTrainer`` for ``--max_steps`` steps on rows with a ``seed`` column, so the
   ``num_generations`` rollouts of a group start from the same task and state.

With ``--backend scripted`` (the default) the "experience model" is the scripted fake of the
contract tests: ``stop [answer]`` succeeds, nothing else does. The run shows the plumbing, not
learning on a real simulator.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # environment_factory is experimental in TRL

logger = logging.getLogger("trl_grpo")


@dataclass
class Args:
    env: str = field(default="DreamGym-WebArena-v0", metadata={"help": "Registered env id (synthetic or real twin)."})
    backend: str = field(default="scripted", metadata={"help": "Experience-model backend spec (scripted, http://host:port/v1, transformers:DIR); '' = env default."})
    buffer: str = field(default="none", metadata={"help": "Replay buffer path or URL; 'none' turns retrieval off; '' = env default."})
    verbs: str = field(default="", metadata={"help": "Comma-separated verbs to expose as tools ('' = all of the env's); fewer tools, shorter prompts."})
    output_dir: str = field(default="runs/trl_grpo", metadata={"help": "Where the trainer writes."})
    policy_dir: str = field(default="", metadata={"help": "Policy model directory; '' builds the tiny random policy under output_dir."})
    warmup_steps: int = field(default=300, metadata={"help": "Supervised steps teaching the tool-call format (0: none)."})
    warmup_lr: float = field(default=5e-3, metadata={"help": "Learning rate of the warm-up."})
    num_tasks: int = field(default=2, metadata={"help": "Distinct starts (seeds) in the dataset."})
    max_steps: int = field(default=2, metadata={"help": "GRPO optimizer steps."})
    num_generations: int = field(default=4, metadata={"help": "Rollouts per start (a GRPO group)."})
    per_device_train_batch_size: int = field(default=4, metadata={"help": "Rollouts per device and step."})
    max_completion_length: int = field(default=256, metadata={"help": "Tokens per rollout, tool results included."})
    max_tool_calling_iterations: int = field(default=3, metadata={"help": "Most tool calls per rollout."})
    learning_rate: float = field(default=1e-4, metadata={"help": "GRPO learning rate."})
    temperature: float = field(default=0.7, metadata={"help": "Sampling temperature of the rollouts."})
    top_k: int = field(default=5, metadata={"help": "Sampling top-k of the rollouts (0: whole vocabulary; a tiny policy's long tail is noise)."})
    max_episode_steps: int = field(default=5, metadata={"help": "Env step limit per episode."})
    seed: int = field(default=0, metadata={"help": "Seed of the policy, the warm-up and the dataset."})

    def __post_init__(self):
        if self.per_device_train_batch_size % self.num_generations:
            raise ValueError(f"per_device_train_batch_size ({self.per_device_train_batch_size}) must be divisible by "
                             f"num_generations ({self.num_generations}).")


# ----------------------------------------------------------------------------- the tiny policy
def build_tiny_policy(out_dir: Path, *, hidden_size: int = 128, num_layers: int = 2, seed: int = 0) -> Path:
    """A random Llama with SmolLM2's tokenizer and TRL's Qwen2.5 chat template (tool calling)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM
    from trl.chat_template_utils import qwen2_5_chat_template

    from dreamgym_env.backends.default_model import build_default_model

    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(build_default_model())
    tokenizer.chat_template = qwen2_5_chat_template  # ChatML, like SmolLM2's, plus <tool_call> blocks
    tokenizer.pad_token = tokenizer.eos_token = "<|im_end|>"
    tokenizer.save_pretrained(out_dir)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers, num_attention_heads=max(1, hidden_size // 32), num_key_value_heads=1,
        head_dim=32, max_position_embeddings=4096, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).to(torch.float32)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out_dir)
    return out_dir


def tool_methods(env: Any) -> list:
    """The env's tools, found as TRL finds them: public functions but reset and get_reward."""
    import inspect

    return [getattr(env, name) for name, _ in inspect.getmembers(type(env), predicate=inspect.isfunction)
            if name not in ("reset", "get_reward") and not name.startswith("_")]


def warm_up_tool_format(policy_dir: Path, env_cls: type, seeds: Sequence[int], *, steps: int, lr: float,
                        seed: int = 0) -> list[float]:
    """Teach the policy the tool-call format on the env's own prompts; returns the losses.

    Targets (weights): ``stop(answer="done")`` (2) and ``click(ref="2")`` (1) when the env has
    those tools, and plain text (1), rendered by the chat template itself, so they are exactly
    what TRL's parser reads back.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(policy_dir)
    model = AutoModelForCausalLM.from_pretrained(policy_dir, dtype=torch.float32)
    env = env_cls()
    tools = tool_methods(env)
    names = {tool.__name__ for tool in tools}
    calls = [(1, {"role": "assistant", "content": "I cannot find it."})]
    if "stop" in names:
        calls.append((2, {"role": "assistant", "content": "", "tool_calls": [
            {"type": "function", "function": {"name": "stop", "arguments": {"answer": "done"}}}]}))
    if "click" in names:
        calls.append((1, {"role": "assistant", "content": "", "tool_calls": [
            {"type": "function", "function": {"name": "click", "arguments": {"ref": "2"}}}]}))
    examples = []
    for s in seeds:
        user = [{"role": "user", "content": env.reset(seed=s)}]
        prompt = tokenizer.apply_chat_template(user, tools=tools, add_generation_prompt=True, tokenize=False)
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        for weight, reply in calls:
            full = tokenizer.apply_chat_template(user + [reply], tools=tools, tokenize=False)
            assert full.startswith(prompt), "chat template is not prefix-preserving"
            target = full[len(prompt):].rstrip("\n")
            target_ids = tokenizer(target, add_special_tokens=False)["input_ids"]
            examples += [(prompt_ids, target_ids)] * weight
    rng = random.Random(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: 1.0 - 0.9 * i / max(1, steps))
    model.train()
    losses = []
    for _ in range(steps):
        batch = rng.sample(examples, k=min(4, len(examples)))
        # Left padding puts every target at the end, so only the last `keep` logits are needed
        # (the vocabulary is 49k: full-sequence logits would dominate the cost).
        width = max(len(p) + len(t) for p, t in batch)
        keep = max(len(t) for _, t in batch) + 1
        ids = torch.full((len(batch), width), tokenizer.pad_token_id)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        labels = torch.full((len(batch), keep - 1), -100)
        for row, (p, t) in enumerate(batch):
            ids[row, width - len(p) - len(t):] = torch.tensor(p + t)
            mask[row, width - len(p) - len(t):] = 1
            labels[row, keep - 1 - len(t):] = torch.tensor(t)
        logits = model(input_ids=ids, attention_mask=mask, logits_to_keep=keep).logits[:, :-1]
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), labels.reshape(-1), ignore_index=-100)
        loss.backward()
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    model.save_pretrained(policy_dir)
    return losses


# ------------------------------------------------------------------------------------- main
def main(argv: Sequence[str] | None = None) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, HfArgumentParser
    from trl import GRPOConfig, GRPOTrainer

    from dreamgym_env.integrations.trl_env import make_tool_env

    (args,) = HfArgumentParser(Args).parse_args_into_dataclasses(args=list(argv) if argv is not None else None)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logger.info("args: %s", json.dumps(asdict(args)))
    started = time.perf_counter()
    random.seed(args.seed)
    torch.manual_seed(args.seed)

    # setup: the env class, one tool per verb of its grammar
    env_kwargs: dict[str, Any] = {"max_episode_steps": args.max_episode_steps}
    if args.backend:
        env_kwargs["backend"] = args.backend
    if args.buffer:
        env_kwargs["buffer"] = False if args.buffer.lower() == "none" else args.buffer
    verbs = [v.strip() for v in args.verbs.split(",") if v.strip()] or None
    env_cls = make_tool_env(args.env, verbs=verbs, **env_kwargs)
    seeds = [args.seed * 1000 + i for i in range(args.num_tasks)]

    # setup: the policy (built and warmed up unless one is given)
    output_dir = Path(args.output_dir)
    policy_dir = Path(args.policy_dir) if args.policy_dir else output_dir / "tiny-policy"
    warmup_losses: list[float] = []
    if not args.policy_dir:
        shutil.rmtree(policy_dir, ignore_errors=True)
        build_tiny_policy(policy_dir, seed=args.seed)
        if args.warmup_steps:
            warmup_seeds = sorted(set(seeds) | set(range(args.seed * 1000, args.seed * 1000 + 4)))  # >= 4 pages: learn the format, not the page
            warmup_losses = warm_up_tool_format(policy_dir, env_cls, warmup_seeds, steps=args.warmup_steps,
                                                lr=args.warmup_lr, seed=args.seed)
            logger.info("tool-format warm-up: loss %.3f -> %.3f", warmup_losses[0], warmup_losses[-1])
    tokenizer = AutoTokenizer.from_pretrained(policy_dir)
    model = AutoModelForCausalLM.from_pretrained(policy_dir, dtype=torch.float32)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}

    # data: one row per start; the seed column makes the group's rollouts start alike
    rows = [{"prompt": [{"role": "user", "content": ""}], "seed": s} for s in seeds]
    dataset = Dataset.from_list(rows * max(1, args.max_steps))

    config = GRPOConfig(
        output_dir=str(output_dir / "trainer"), max_steps=args.max_steps, learning_rate=args.learning_rate,
        per_device_train_batch_size=args.per_device_train_batch_size, num_generations=args.num_generations,
        max_completion_length=args.max_completion_length, max_tool_calling_iterations=args.max_tool_calling_iterations,
        temperature=args.temperature, top_k=args.top_k, logging_steps=1, save_strategy="no", report_to="none", bf16=False, seed=args.seed,
        use_cpu=not torch.cuda.is_available(), dataloader_num_workers=0,
    )
    trainer = GRPOTrainer(model=model, processing_class=tokenizer, train_dataset=dataset, args=config,
                          environment_factory=env_cls)

    # train
    trainer.train()

    # log
    logs = [entry for entry in trainer.state.log_history if "reward" in entry]
    changed = sum(not torch.equal(before[n], p.detach()) for n, p in trainer.model.named_parameters())
    envs = [e for pool in trainer._environment_pool.values() for e in pool]
    summary = {
        "env": args.env,
        "steps": trainer.state.global_step,
        "rewards": [entry["reward"] for entry in logs],
        "reward_std": [entry.get("reward_std") for entry in logs],
        "tool_call_frequency": [entry.get("tools/call_frequency") for entry in logs],
        "env_steps": sum(e.total_steps for e in envs),
        "env_actions": sorted({a.split(" ", 1)[0] for e in envs for a in e.actions}),
        "parameters_changed": changed,
        "parameters": len(before),
        "warmup_loss": [warmup_losses[0], warmup_losses[-1]] if warmup_losses else None,
        "seconds": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
