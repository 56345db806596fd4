"""Local GGUF models through llama-cpp-python: the bouquet's safety net.

Generation runs on a thread of its own per model, never on the event loop: llama.cpp
releases the GIL inside its C calls, and the Python between tokens is short, so the
cockpit keeps drawing. Tokens come back to the loop with call_soon_threadsafe.

Three knobs act between two evaluations of the model (each prompt chunk, each token):
- cancellation: a flag the next evaluation sees, so a generation stops within one token,
  or one prompt chunk of CHUNK_TOKENS (well under a second);
- the thread count, changed in place on the llama context (llama_set_n_threads);
- the duty cycle: after each evaluation that took t seconds, the thread rests
  t * (1 - duty) / duty, so a 50% duty halves the tokens per second and the heat.

Models load on first use, stay warm for keep_warm_s, and idle ones are unloaded when the
machine's free memory falls under min_free_mb. Energy is measured around each generation
(engine/power.py) and the call costs $0.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from .. import gguf
from ..config import ModelSpec, ProviderSpec
from ..ledger import grid_gco2e_per_kwh
from ..power import EnergyMeter
from ..usage import ENERGY_UNKNOWN, Energy
from .base import (
    ChatRequest,
    ChatResult,
    MalformedResponse,
    OnToken,
    ProviderError,
    Rejected,
    Usage,
)

CHUNK_TOKENS = 64  # prompt tokens per evaluation: the cancellation and throttle grain
DEFAULT_CONTEXT = 4096
DEFAULT_TEMPERATURE = 0.2
_END = object()
log = logging.getLogger(__name__)


class Cancelled(Exception):
    """Raised inside the generation thread when the caller went away."""


@dataclass
class Throttle:
    """The regulator's knob, read by the generation threads between evaluations."""

    threads: int
    duty: float = 1.0  # the share of wall time a generation may compute, (0, 1]
    computed_s: float = 0.0  # time spent evaluating, all generations so far
    rested_s: float = 0.0  # time the duty cycle held generations back

    def set(self, *, threads: int | None = None, duty: float | None = None) -> None:
        if threads is not None:
            if threads < 1:
                raise ValueError("threads must be at least 1")
            self.threads = threads
        if duty is not None:
            if not 0.0 < duty <= 1.0:
                raise ValueError("duty must be in (0, 1]")
            self.duty = duty


def default_threads() -> int:
    return max(1, os.cpu_count() or 1)


@cache
def _llama_class() -> type:
    """llama_cpp's Llama with the three knobs; llama_cpp loads only when a model does."""
    import llama_cpp

    _quiet_llama_logs(llama_cpp)

    class Local(llama_cpp.Llama):  # type: ignore[misc,name-defined]
        cancel: threading.Event
        throttle: Throttle
        prompt_tokens = 0
        completion_tokens = 0
        _threads_now = 0

        def eval(self, tokens: Any) -> None:
            for start in range(0, len(tokens), CHUNK_TOKENS):
                if self.cancel.is_set():
                    raise Cancelled
                threads = self.throttle.threads
                if threads != self._threads_now:
                    llama_cpp.llama_set_n_threads(self.ctx, threads, threads)
                    self._threads_now = threads
                began = time.perf_counter()
                super().eval(tokens[start:start + CHUNK_TOKENS])
                worked = time.perf_counter() - began
                self.throttle.computed_s += worked
                duty = self.throttle.duty
                if duty < 1.0:
                    # Rest in proportion to the work just done; cancel still wakes us.
                    rest = worked * (1.0 - duty) / duty
                    if self.cancel.wait(rest):
                        raise Cancelled
                    self.throttle.rested_s += rest

        def generate(self, tokens: Any, *args: Any, **kwargs: Any) -> Any:
            self.prompt_tokens = len(tokens)
            self.completion_tokens = 0
            for token in super().generate(tokens, *args, **kwargs):
                self.completion_tokens += 1
                yield token

    return Local


_LOG_CALLBACK: Any = None  # kept alive: llama.cpp holds the C pointer


def _quiet_llama_logs(llama_cpp: Any) -> None:
    """llama.cpp prints to stderr, which is the cockpit's terminal: send it to logging."""
    global _LOG_CALLBACK
    if _LOG_CALLBACK is not None:
        return
    native = logging.getLogger("llama.cpp")

    @llama_cpp.llama_log_callback
    def forward(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        native.debug("%s", text.decode("utf-8", "replace").rstrip())

    _LOG_CALLBACK = forward
    llama_cpp.llama_log_set(forward, ctypes.c_void_p(0))


class LocalModel:
    """One GGUF: loaded on demand, one generation at a time."""

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.llama: Any = None
        self.lock = asyncio.Lock()
        self.busy = False
        self.last_used = 0.0
        self.load_s: float | None = None

    @property
    def loaded(self) -> bool:
        return self.llama is not None


class LlamaCppProvider:
    def __init__(self, spec: ProviderSpec, models_dir: Path, *,
                 meter: EnergyMeter | None = None) -> None:
        self.id = spec.id
        self.spec = spec
        self.models_dir = models_dir
        self.meter = meter or EnergyMeter()
        self.throttle = Throttle(spec.threads or default_threads())
        self.models = {m.id: LocalModel(m) for m in spec.models}
        # One thread per model: loads and generations queue per model, never on the
        # loop's default executor (keyring and SQLite use that one).
        self._executor = ThreadPoolExecutor(max_workers=max(1, len(self.models)),
                                            thread_name_prefix=f"llama-{spec.id}")
        self._gco2e_per_kwh: float | None = None
        self.paused = asyncio.Event()
        self.paused.set()  # set: generations may start; the regulator clears it to pause

    # -- the regulator's knobs ----------------------------------------------------------

    def set_throttle(self, *, threads: int | None = None, duty: float | None = None) -> None:
        self.throttle.set(threads=threads, duty=duty)

    # -- loading ------------------------------------------------------------------------

    async def load(self, model_id: str) -> LocalModel:
        """Load a model now (warm it up) if it is not; returns it."""
        model = self._model(model_id)
        if model.llama is None:
            loop = asyncio.get_running_loop()
            began = time.perf_counter()
            model.llama = await loop.run_in_executor(self._executor, self._load, model.spec)
            model.load_s = time.perf_counter() - began
            model.last_used = time.monotonic()
        return model

    def _load(self, spec: ModelSpec) -> Any:
        path = gguf.resolve(spec.path or "", self.models_dir)
        chat: dict[str, Any] = {}
        if spec.chat_template is not None:
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter

            formatter = Jinja2ChatFormatter(spec.chat_template, eos_token="", bos_token="")
            chat["chat_handler"] = formatter.to_chat_handler()
        elif spec.chat_format is not None:
            chat["chat_format"] = spec.chat_format
        elif spec.path == gguf.EMBEDDED:
            chat["chat_format"] = gguf.EMBEDDED_CHAT_FORMAT
        llama = _llama_class()(
            model_path=str(path), n_ctx=spec.context or DEFAULT_CONTEXT,
            n_threads=self.throttle.threads, n_threads_batch=self.throttle.threads,
            n_gpu_layers=self.spec.gpu_layers, verbose=False, **chat)
        llama.cancel = threading.Event()
        llama.throttle = self.throttle
        llama._threads_now = self.throttle.threads
        return llama

    async def unload_idle(self, *, older_than_s: float = 0.0) -> list[str]:
        """Unload the models no generation is using, idle for older_than_s or more."""
        now = time.monotonic()
        unloaded: list[str] = []
        for model in self.models.values():
            if model.llama is None or model.busy or now - model.last_used < older_than_s:
                continue
            async with model.lock:
                llama, model.llama = model.llama, None
            if llama is not None:
                await asyncio.get_running_loop().run_in_executor(self._executor, llama.close)
                unloaded.append(model.spec.id)
        return unloaded

    async def housekeeping(self, available_mb: float) -> list[str]:
        """Idle models go after keep_warm_s, or at once when memory runs short."""
        if available_mb < self.spec.min_free_mb:
            return await self.unload_idle()
        return await self.unload_idle(older_than_s=self.spec.keep_warm_s)

    # -- calls --------------------------------------------------------------------------

    def _model(self, model_id: str) -> LocalModel:
        model = self.models.get(model_id)
        if model is None:
            raise Rejected(self.id, f"no local model {model_id!r}; this provider has "
                           + ", ".join(sorted(self.models)))
        return model

    async def complete(self, request: ChatRequest, on_token: OnToken | None = None
                       ) -> ChatResult:
        model = self._model(request.model)
        started = time.perf_counter()
        await self.paused.wait()
        async with model.lock:
            try:
                llama = (await self.load(request.model)).llama
            except gguf.ModelFileError as exc:
                raise Rejected(self.id, f"{exc}; {exc.fix}") from None
            model.busy = True
            try:
                return await self._generate(model, llama, request, on_token, started)
            finally:
                model.busy = False
                model.last_used = time.monotonic()

    async def _generate(self, model: LocalModel, llama: Any, request: ChatRequest,
                        on_token: OnToken | None, started: float) -> ChatResult:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        llama.cancel = threading.Event()

        def emit(item: Any) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, item)

        work = loop.run_in_executor(self._executor, self._run, llama, request, emit)
        pieces: list[str] = []
        ttft: float | None = None
        try:
            while (piece := await queue.get()) is not _END:
                if ttft is None:
                    ttft = time.perf_counter() - started
                pieces.append(piece)
                if on_token is not None:
                    pending = on_token(piece)
                    if pending is not None:
                        await pending
            finish, prompt_tokens, completion_tokens, energy = await work
        except BaseException:
            # Cancelled (or on_token failed): stop the thread at its next evaluation and
            # wait for it, so the model is free and consistent for the next call.
            llama.cancel.set()
            with contextlib.suppress(BaseException):
                await asyncio.shield(work)
            raise
        duration = time.perf_counter() - started
        text = "".join(pieces)
        usage = Usage(prompt_tokens, completion_tokens)
        return ChatResult(self.id, model.spec.id, text, usage,
                          ttft if request.stream else None, duration, finish,
                          energy=energy)

    def _run(self, llama: Any, request: ChatRequest, emit: Callable[[Any], None]
             ) -> tuple[str | None, int, int, Energy]:
        """The generation thread: stream pieces to the loop, return the tallies."""
        finish: str | None = None
        kwargs: dict[str, Any] = {
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
            "max_tokens": request.max_tokens,
            "temperature": DEFAULT_TEMPERATURE if request.temperature is None
            else request.temperature,
            "stream": True,
        }
        if request.json_mode:
            kwargs["response_format"] = {"type": "json_object"}  # a JSON grammar
        try:
            with self.meter.measure() as measured:
                try:
                    for chunk in llama.create_chat_completion(**kwargs):
                        for choice in chunk.get("choices") or ():
                            piece = (choice.get("delta") or {}).get("content")
                            if piece:
                                emit(piece)
                            finish = choice.get("finish_reason") or finish
                except Cancelled:
                    finish = "cancelled"
                except ProviderError:
                    raise
                except (ValueError, RuntimeError) as exc:
                    # llama.cpp's refusals: a prompt longer than the context, a bad template.
                    raise MalformedResponse(self.id, f"local generation failed: {exc}"
                                            ) from None
        finally:
            emit(_END)
        return finish, llama.prompt_tokens, llama.completion_tokens, self._energy(measured)

    def _energy(self, measured: Any) -> Energy:
        if measured.wh <= 0:
            return Energy(None, None, ENERGY_UNKNOWN)
        if self._gco2e_per_kwh is None:
            self._gco2e_per_kwh = grid_gco2e_per_kwh(self.spec.zone) or 0.0
        return Energy(measured.wh, measured.wh / 1000.0 * self._gco2e_per_kwh,
                      measured.method)

    def status(self) -> dict[str, Any]:
        """What the cockpit shows about the local stack."""
        return {
            "threads": self.throttle.threads, "duty": self.throttle.duty,
            "paused": not self.paused.is_set(),
            "models": {mid: {"loaded": m.loaded, "busy": m.busy, "load_s": m.load_s}
                       for mid, m in self.models.items()},
        }

    async def aclose(self) -> None:
        for model in self.models.values():
            if model.llama is not None:
                model.llama.cancel.set()
        await self.unload_idle()
        self._executor.shutdown(wait=False, cancel_futures=True)
