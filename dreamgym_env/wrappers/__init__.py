"""Small Gymnasium wrappers: SB3 spaces, text embeddings and action masks."""

from dreamgym_env.wrappers.sb3 import DiscreteAdmissibleActions, TextEmbeddingObservation, make_sb3_env

__all__ = ["DiscreteAdmissibleActions", "TextEmbeddingObservation", "make_sb3_env"]
