"""Rollout plans: evidence gathered per step, gates that judge it, and plans that move on it."""
