"""Provider kinds. `build_provider` is the one place that maps a config kind to a client."""

from __future__ import annotations

from pathlib import Path

from ..config import ProviderSpec
from ..keys import Secret
from .base import Provider


def build_provider(spec: ProviderSpec, key: Secret | None, *, models_dir: Path) -> Provider:
    """models_dir: where the embedded local model is assembled (the data dir's models/)."""
    if spec.kind == "llama_cpp":
        from .llama_cpp import LlamaCppProvider

        return LlamaCppProvider(spec, models_dir)
    if spec.kind == "openai":
        from .openai_compat import OpenAICompatProvider

        assert spec.base_url is not None  # the config validator guarantees it
        # The pool holds as many connections as the provider may have calls in flight.
        return OpenAICompatProvider(spec.id, spec.base_url, key=key, timeout_s=spec.timeout_s,
                                    deadline_s=spec.deadline_s,
                                    max_answer_bytes=spec.max_answer_bytes,
                                    max_connections=spec.max_concurrency)
    raise AssertionError(f"unknown provider kind {spec.kind!r}")  # config rejects it
