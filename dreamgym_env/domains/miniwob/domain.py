"""The MiniWoB domain: task families, action grammar and text states (no browser needed)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any, Sequence

from dreamgym_env.domains.actions import ActionGrammar
from dreamgym_env.domains.base import Domain, Task
from dreamgym_env.domains.miniwob.serialize import admissible_actions
from dreamgym_env.domains.miniwob.tasks import MINIWOB_VERBS, load_miniwob_tasks
from dreamgym_env.schema import OutputLimits


def real_dataset_path() -> Path:
    """The real MiniWoB++ trajectories shipped with the package (``dreamgym collect`` output:
    19 families, mixed and random policies, JSONL.gz; read with
    :func:`dreamgym_env.collect.read_trajectories`)."""
    return Path(str(resources.files("dreamgym_env") / "data" / "miniwob" / "miniwob_real_v0.jsonl.gz"))


class MiniWoBDomain(Domain):
    """MiniWoB++ web tasks; states are element lines, next states predicted as patches.

    Args:
        task_ids: keep only these families (default: all of
            :data:`~dreamgym_env.domains.miniwob.tasks.TASK_IDS`).
    """

    name = "miniwob"
    state_format = "patch"
    max_episode_steps = 12
    # The longest real answer is 796 tokens (an email-inbox page rewritten by a patch; 477 of
    # 1,680 email-inbox answers exceed 256, the former cap, which cut them into invalid JSON).
    max_output_tokens = 1024
    # ...but a degenerate answer (a loop) ran to that cap and held up its whole batch (docs/
    # benchmarks.md): no real answer of v0 + v1 + v2 is longer than 130 tokens beyond half its
    # prompt's characters (`python benchmarks/token_budget.py --sample 30000 --prompt-version v5
    # --reasoning-rule v5`: 0 of 14,624 over), so 256 beyond stops loops early.
    answer_tokens_beyond_prompt = 256
    # The longest real patch has 69 lines (email-inbox; 382 of 20,367 real transitions of v0 +
    # v1 + v2, email-inbox and use-autocomplete, need more than the former 24).
    output_limits = OutputLimits(patch_lines=96)
    terminal_verbs: tuple[str, ...] = ()  # MiniWoB pages end their episodes themselves
    # Short prompts: each token costs training and serving compute (see docs/fidelity.md).
    default_top_k = 2
    default_history_length = 2
    describe_actions = False
    grammar = ActionGrammar(MINIWOB_VERBS)

    def __init__(self, task_ids: Sequence[str] | None = None):
        super().__init__(load_miniwob_tasks(task_ids))

    def default_model(self) -> str | None:
        """The embedded MiniWoB experience model when this installation ships it, else None
        (the untrained base; a warning says so)."""
        from dreamgym_env.backends.default_model import miniwob_model_dir
        from dreamgym_env.errors import ModelNotFoundError

        try:
            return str(miniwob_model_dir())
        except ModelNotFoundError:
            return None

    def default_buffer(self) -> Any:
        """The real trajectories the shipped model was trained on (its card's data; the package's
        v0 collection when it names none), in a persistent buffer built once under the cache."""
        from dreamgym_env.backends.default_model import card_data_files
        from dreamgym_env.buffer.defaults import seeded_buffer

        model = self.default_model()
        files = (card_data_files(Path(model)) if model else None) or [str(real_dataset_path())]
        return seeded_buffer("miniwob", files)

    def admissible_actions(self, state: str, goal: str = "") -> list[str]:
        """Clicks on every element, a ``select`` per option of each list and, for text fields,
        ``type`` actions of the strings quoted or named in ``goal``. Works on text alone, so
        predicted states get the same lists as real ones."""
        return admissible_actions(state, goal)

    def initial_state_context(self, task: Task) -> str:
        template = task.metadata.get("template", "")
        description = task.metadata.get("description", "")
        return f"MiniWoB++ task {task.task_id}: {description}\nUtterance template: {template}"

    def fallback_initial_state(self, task: Task) -> str:
        return '[4] button "Submit"'
