"""Catalogue: pretraining tasks (being written)."""
