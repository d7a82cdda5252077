"""Storing and reporting the divergences found in parallel runs."""
