"""Where the config and the data live: flag, then environment, then the platform's dirs."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

APP = "aetherflow"
CONFIG_ENV = "AETHERFLOW_CONFIG"
HOME_ENV = "AETHERFLOW_HOME"


@dataclass(frozen=True, slots=True)
class Paths:
    config: Path
    config_explicit: bool  # named by --config or AETHERFLOW_CONFIG: it must exist
    home: Path

    @property
    def database(self) -> Path:
        return self.home / "aetherflow.db"


def resolve(config: Path | None = None, home: Path | None = None) -> Paths:
    import platformdirs

    env_config = os.environ.get(CONFIG_ENV)
    env_home = os.environ.get(HOME_ENV)
    if config is None and env_config:
        config = Path(env_config)
    explicit = config is not None
    if config is None:
        config = platformdirs.user_config_path(APP) / "bouquet.toml"
    if home is None:
        home = Path(env_home) if env_home else platformdirs.user_data_path(APP)
    return Paths(config.expanduser(), explicit, home.expanduser())


class FileRefused(OSError):
    """A file that is not a regular file, or is bigger than its reader allows."""


def read_bounded(path: Path, limit: int, *, truncate: bool = False) -> bytes:
    """A regular file's bytes, at most `limit` of them, without trusting what the path is.

    A device (/dev/zero), a FIFO or a directory is refused before any read: the first never
    ends, the second blocks until a writer comes. A file over `limit` is refused, or cut at
    `limit` when `truncate`: only that much is ever read, however big the file is.
    FileNotFoundError and other OSErrors (a symlink loop: ELOOP) go to the caller.
    """
    import stat

    # O_NONBLOCK: opening a FIFO for reading otherwise waits for a writer, forever.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise FileRefused(f"{_kind(info.st_mode)}, not a regular file")
        if info.st_size > limit and not truncate:
            raise FileRefused(f"{info.st_size:,} bytes, over the {limit:,}-byte limit")
        chunks: list[bytes] = []
        left = limit + 1  # one byte more tells a file that grew past the limit
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > limit:
        if not truncate:
            raise FileRefused(f"over the {limit:,}-byte limit")
        data = data[:limit]
    return data


def _kind(mode: int) -> str:
    import stat

    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "a special file"
