"""Bundled text-policy trainers: PPO (GAE, value head) and GRPO (group-normalised advantages)."""
