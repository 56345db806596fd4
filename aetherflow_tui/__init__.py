"""Aetherflow: a terminal cockpit for an AI factory running on a bouquet of LLM providers."""

__version__ = "0.1.0"
