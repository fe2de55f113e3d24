"""Generation mode: a causal language model writes the action text itself.

For domains without ``info["admissible_actions"]`` (or to train an LLM agent rather than a
scorer). The prompt is the model's chat template over a short instruction, the domain's action
grammar and the observation; an action is the sampled tokens up to the first newline or end of
turn, its log-probability their summed token log-probabilities, and a linear value head reads
the prompt's last hidden state. Any Hugging Face causal LM directory works; the default is the
embedded SmolLM2-135M-Instruct.
"""

from __future__ import annotations

import logging
from typing import Sequence

import torch
from torch import nn

logger = logging.getLogger(__name__)

INSTRUCTION = "You are a web agent. Reply with exactly one action on one line, nothing else."


class GenerativeTextPolicy(nn.Module):
    """Actor-critic whose actor is a causal LM generating the action string.

    Args:
        model: a Hugging Face causal LM directory; None: the embedded SmolLM2-135M-Instruct.
        action_help: the action grammar shown in the prompt (``domain.grammar.describe()``).
        max_new_tokens: most tokens of one action.
        max_prompt_tokens: prompts are cut from the left to this many tokens.
        temperature: sampling temperature (log-probabilities are taken at the same temperature).
        device: "cpu", "cuda"...; None picks a GPU when one is visible.
    """

    needs_admissible_actions = False

    def __init__(self, model: str | None = None, action_help: str = "", max_new_tokens: int = 24,
                 max_prompt_tokens: int = 768, temperature: float = 1.0, device: str | None = None):
        super().__init__()
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from dreamgym_env.backends.default_model import resolve_model
        from dreamgym_env.device import pick_device

        if max_new_tokens < 1 or temperature <= 0:
            raise ValueError(f"max_new_tokens ({max_new_tokens}) must be >= 1 and temperature ({temperature}) > 0")
        location = resolve_model(model)
        self.tokenizer = AutoTokenizer.from_pretrained(location.base_path)
        self.tokenizer.truncation_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.lm = AutoModelForCausalLM.from_pretrained(location.base_path, dtype=torch.float32)
        self.value_head = nn.Linear(self.lm.config.hidden_size, 1)
        self.action_help, self.max_new_tokens, self.max_prompt_tokens = action_help, max_new_tokens, max_prompt_tokens
        self.temperature = temperature
        self.stop_ids = self._stop_ids()
        self.to(pick_device(device))

    @property
    def device(self) -> torch.device:
        return self.value_head.weight.device

    def _stop_ids(self) -> torch.Tensor:
        """End-of-turn tokens and every token whose text holds a newline (an action is one line)."""
        ids = {i for i in (self.tokenizer.eos_token_id, self.tokenizer.pad_token_id) if i is not None}
        for token_id in range(len(self.tokenizer)):
            if "\n" in self.tokenizer.decode([token_id]):
                ids.add(token_id)
        return torch.tensor(sorted(ids))

    def prompt(self, observation: str) -> str:
        """The chat-templated prompt for one observation."""
        system = INSTRUCTION + (f"\n{self.action_help}" if self.action_help else "")
        messages = [{"role": "system", "content": system}, {"role": "user", "content": observation}]
        if self.tokenizer.chat_template:
            return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return f"{system}\n\n{observation}\nAction:"

    def _prompt_ids(self, observations: Sequence[str]) -> list[list[int]]:
        enc = self.tokenizer([self.prompt(o) for o in observations], add_special_tokens=False, truncation=True,
                             max_length=self.max_prompt_tokens)
        return enc["input_ids"]

    def _left_padded(self, rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(ids, attention mask, position ids) of rows padded on the left."""
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, width - len(r):] = torch.tensor(r)
            mask[i, width - len(r):] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        return ids.to(self.device), mask.to(self.device), positions.to(self.device)

    def _text(self, tokens: Sequence[int]) -> str:
        return self.tokenizer.decode(list(tokens), skip_special_tokens=True).split("\n")[0].strip()

    @torch.no_grad()
    def act(self, observations: Sequence[str], actions: Sequence[Sequence[str]] | None, rng: torch.Generator,
            greedy: bool = False) -> tuple[list[str], list[tuple[int, ...]], torch.Tensor, torch.Tensor]:
        """(action texts, choices (the generated token ids), log-probabilities, values);
        ``actions`` is ignored (this policy writes its own)."""
        ids, mask, positions = self._left_padded(self._prompt_ids(observations))
        out = self.lm(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True,
                      output_hidden_states=True, logits_to_keep=1)
        values = self.value_head(out.hidden_states[-1][:, -1]).squeeze(-1)
        batch = ids.shape[0]
        generated: list[list[int]] = [[] for _ in range(batch)]
        logp = torch.zeros(batch, device=self.device)
        finished = torch.zeros(batch, dtype=torch.bool, device=self.device)
        stop = self.stop_ids.to(self.device)
        logits, past, position = out.logits[:, -1], out.past_key_values, positions[:, -1:]
        for _ in range(self.max_new_tokens):
            logprobs = torch.log_softmax(logits.float() / self.temperature, -1)
            if greedy:
                token = logprobs.argmax(-1)
            else:
                token = torch.multinomial(logprobs.exp().cpu(), 1, generator=rng).squeeze(-1).to(self.device)
            step_logp = logprobs.gather(-1, token[:, None]).squeeze(-1)
            for row in torch.nonzero(~finished).flatten().tolist():
                generated[row].append(int(token[row]))
            logp = logp + torch.where(finished, torch.zeros_like(step_logp), step_logp)
            finished |= torch.isin(token, stop)
            if bool(finished.all()):
                break
            mask = torch.cat([mask, torch.ones((batch, 1), dtype=mask.dtype, device=self.device)], 1)
            position = position + 1
            out = self.lm(input_ids=token[:, None], attention_mask=mask, position_ids=position, past_key_values=past,
                          use_cache=True)
            logits, past = out.logits[:, -1], out.past_key_values
        return [self._text(g) for g in generated], [tuple(g) for g in generated], logp, values

    def evaluate_actions(self, observations: Sequence[str], actions: Sequence[Sequence[str]] | None,
                         choices: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(summed log-probabilities of the generated tokens ``choices``, mean token entropies,
        values) under the current weights, teacher-forced in one forward pass."""
        prompts = self._prompt_ids(observations)
        rows = [p + list(c) for p, c in zip(prompts, choices)]
        ids, mask, positions = self._left_padded(rows)
        longest = max(len(c) for c in choices)
        out = self.lm(input_ids=ids, attention_mask=mask, position_ids=positions, output_hidden_states=True,
                      logits_to_keep=longest + 1)
        # logits[:, j] predicts ids[:, width - longest + j]; the action's tokens are the last len(c).
        logprobs = torch.log_softmax(out.logits[:, :-1].float() / self.temperature, -1)
        targets = ids[:, -longest:]
        token_logp = logprobs.gather(-1, targets[..., None]).squeeze(-1)
        entropy = -(logprobs.exp() * logprobs).sum(-1)
        lengths = torch.tensor([len(c) for c in choices], device=self.device)
        keep = torch.arange(longest, device=self.device)[None, :] >= (longest - lengths)[:, None]
        logp = (token_logp * keep).sum(-1)
        mean_entropy = (entropy * keep).sum(-1) / lengths
        hidden = out.hidden_states[-1]
        prompt_last = hidden[torch.arange(len(rows), device=self.device), hidden.shape[1] - lengths - 1]
        return logp, mean_entropy, self.value_head(prompt_last).squeeze(-1)
