"""Prompt-level learning: embeddings, demos, lessons, the personal judge, persona bootstrap, DSPy."""
