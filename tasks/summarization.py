"""Catalogue: summarization tasks (being written)."""
