"""Writing output files: check the path first, then write whole files or nothing."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .errors import PathexpandError

__all__ = ["check_output_path", "write_atomic"]


def check_output_path(path, example: str) -> Path:
    """``path`` as a ``Path`` if it names a file (like ``example``) in a writable folder."""
    try:
        out = Path(path).expanduser()
    except TypeError:
        raise PathexpandError(f"path must be a file path, got {type(path).__name__}") from None
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
