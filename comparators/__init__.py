"""Comparing the legacy and new answers of a parallel run."""
