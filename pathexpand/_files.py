"""Writing output files: check the path first, then write whole files or nothing."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .errors import PathexpandError

__all__ = ["WEIGHTS_SUFFIXES", "check_output_path", "write_atomic"]

# where weights live: a derivation, a picture or a page never goes there (it would replace them)
WEIGHTS_SUFFIXES = (".safetensors", ".npz", ".gguf", ".pt", ".pth", ".bin", ".ckpt", ".pkl", ".pickle")


def check_output_path(path, example: str, *, weights: bool = False) -> Path:
    """``path`` as a ``Path`` if it names a file (like ``example``) in a writable folder. Unless
    ``weights`` (``pe.save``), a weights suffix is refused: text or a picture written there would
    replace a model — most often the very file the command read."""
    try:
        out = Path(path).expanduser()
    except TypeError:
        raise PathexpandError(f"path must be a file path, got {type(path).__name__}") from None
    if not weights and out.suffix.lower() in WEIGHTS_SUFFIXES:
        raise PathexpandError(
            f"refusing to write {str(out)!r}: {out.suffix} is a weights file; give a name like {example}"
        )
    if out.is_dir():
        raise PathexpandError(f"{str(out)!r} is a directory; give a file name like {example}")
    folder = out.parent if str(out.parent) else Path(".")
    if not folder.is_dir():
        raise PathexpandError(f"cannot write {str(out)!r}: folder {str(folder)!r} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK) or (out.exists() and not os.access(out, os.W_OK)):
        raise PathexpandError(f"cannot write {str(out)!r}: permission denied")
    return out


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomic(path: Path, data: bytes | str) -> None:
    """Write ``data`` to a temporary file beside ``path``, then rename: never half-written.

    The file gets the usual permissions (``0o666`` minus the umask), not ``mkstemp``'s 0600.
    """
    path = Path(path)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent if str(path.parent) else ".")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
