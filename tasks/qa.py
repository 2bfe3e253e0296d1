"""Catalogue: qa tasks (being written)."""
