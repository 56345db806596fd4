"""Provider kinds. `build_provider` is the one place that maps a config kind to a client."""

from __future__ import annotations

from ..config import ProviderSpec
from ..errors import UsageError
from ..keys import Secret
from .base import Provider


def build_provider(spec: ProviderSpec, key: Secret | None) -> Provider:
    if spec.kind == "openai":
        from .openai_compat import OpenAICompatProvider

        assert spec.base_url is not None  # the config validator guarantees it
        # The pool holds as many connections as the provider may have calls in flight.
        return OpenAICompatProvider(spec.id, spec.base_url, key=key, timeout_s=spec.timeout_s,
                                    max_connections=spec.max_concurrency)
    raise UsageError(f"{spec.id}: provider kind {spec.kind!r} cannot serve calls in this "
                     "version", fix="use an OpenAI-compatible server (kind = \"openai\") "
                     "such as `python -m llama_cpp.server` meanwhile")
