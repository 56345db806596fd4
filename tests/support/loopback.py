"""One base for the loopback servers of tests and benchmarks: real HTTP on 127.0.0.1.

In another process (the scripted server, the benchmarks' fast server): the server module
binds port 0, prints ``READY <url>`` once (``announce()``) and serves until SIGTERM or
SIGINT; ``spawn(module, *args)`` runs it with this interpreter and returns ``(proc, url)``
once that line arrives; ``stop(proc)`` terminates it (killing it if it ignores SIGTERM) and
``kill(proc)`` kills it outright (a provider that vanishes mid-call).

In this process: ``ThreadedServer`` is a ThreadingHTTPServer served on a daemon thread. It
binds in ``__init__``, so ``url`` is known before ``start()``; ``stop()`` sets ``stopping``
first (a handler that holds a request waits on it), then shuts the server down. A subclass
names its request ``handler`` (and, for another backlog or a typed ``owner``, a
``server_class``); the handler reaches the server object as ``self.server.owner``. The
handlers' own logic (what they answer, byte by byte and when) stays in each server's module.

Standard library only, like the servers.
"""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar, Self

REPO_ROOT = Path(__file__).resolve().parents[2]
READY = "READY "  # what a spawned server prints, then its URL, once it is listening


# -- in another process --------------------------------------------------------------------


def announce(url: str) -> None:
    """The server's side of the handshake: say where it listens, once it does."""
    print(f"{READY}{url}", flush=True)


def spawn(module: str, *args: str, timeout: float = 15.0) -> tuple[subprocess.Popen[str], str]:
    """Run ``python -m module *args`` from the repo root; (proc, url) once it is READY.

    The caller must stop(proc) (or kill(proc)). A server that has not said READY within
    `timeout` seconds is killed and RuntimeError raised.
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    proc = subprocess.Popen([sys.executable, "-m", module, *args], cwd=REPO_ROOT, env=env,
                            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    # readline() has no timeout, so read on a helper thread and wait on a queue.
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stdout is not None
    stdout = proc.stdout
    threading.Thread(target=lambda: lines.put(stdout.readline()), daemon=True).start()
    try:
        line = lines.get(timeout=timeout)
    except queue.Empty:
        line = ""
    if not line.startswith(READY):
        kill(proc)
        raise RuntimeError(f"{module} did not start (got {line!r})")
    return proc, line.removeprefix(READY).strip()


def stop(proc: subprocess.Popen[Any], timeout: float = 5.0) -> None:
    """Terminate a spawned process, killing it if SIGTERM is ignored for `timeout` s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


def kill(proc: subprocess.Popen[Any]) -> None:
    """SIGKILL a spawned process and reap it: no clean-up, as a crash or an outage."""
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


# -- in this process -----------------------------------------------------------------------


class QuietHTTPServer(ThreadingHTTPServer):
    """Daemon handler threads, never joined; no tracebacks for clients that hang up."""

    daemon_threads = True
    request_queue_size = 256  # the listen backlog
    # Handler threads may be parked on idle keep-alive sockets or in a hang; joining them
    # in server_close() would make stop() block.
    block_on_close = False
    allow_reuse_address = True

    owner: Any  # the ThreadedServer serving it

    def handle_error(self, request: Any, client_address: Any) -> None:
        # The default prints a traceback to stderr; tests want a quiet server.
        pass


class ThreadedServer:
    """A QuietHTTPServer on a daemon thread; binds in __init__ so ``url`` is known early."""

    handler: ClassVar[type[BaseHTTPRequestHandler]]
    server_class: ClassVar[type[QuietHTTPServer]] = QuietHTTPServer
    thread_name: ClassVar[str] = "loopback-server"

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.stopping = threading.Event()  # set as stop() begins: releases held requests
        self._thread: threading.Thread | None = None
        self._httpd = self.server_class((host, port), self.handler)
        self._httpd.owner = self

    @property
    def origin(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def url(self) -> str:
        return self.origin

    def start(self) -> Self:
        if self._thread is None:
            # Short poll interval keeps shutdown() (and so stop()) quick.
            self._thread = threading.Thread(target=self._httpd.serve_forever,
                                            kwargs={"poll_interval": 0.05},
                                            name=self.thread_name, daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        if self.stopping.is_set():
            return
        self.stopping.set()
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=2)
        self._closing()
        self._httpd.server_close()

    def _closing(self) -> None:
        """After the serving loop ended, before the listening socket closes."""

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
