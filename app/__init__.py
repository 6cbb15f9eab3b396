"""Rafale: an LLM request gateway."""
