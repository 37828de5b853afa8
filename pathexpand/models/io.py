"""Weights files: ``.safetensors`` and ``.npz`` in, ``.safetensors``/``.npz`` out; never a pickle.

File layout (what ``save`` writes and ``read_file`` reads):

- ``.safetensors``: every parameter under its DESIGN.md name; the config JSON
  (``Config.to_dict()``) in the header metadata under ``"pathexpand.config"`` and the model
  card (if any) under ``"pathexpand.card"``. Files from elsewhere may use TransformerLens
  names (``embed.W_E``, ``pos_embed.W_pos``, ``unembed.W_U``, ...) and carry no metadata:
  the config is then inferred from the shapes and missing biases read as zeros.
- ``.npz``: the same arrays; config and card as 0-d string arrays under
  ``"__pathexpand__.config"`` / ``"__pathexpand__.card"``. Read with ``allow_pickle=False``.
- a card sidecar ``<stem>.json`` next to the weights file, if present, is the model card
  (the bundled models keep theirs there, readable without loading weights).

Pickles (``.pt``, ``.pth``, ``.bin``, ``.pkl``, ``.ckpt``, or any file whose bytes are a
pickle or a ``torch.save`` archive) are refused with ``WeightsFileError`` and never
unpickled: convert them yourself with ``torch.load(path, weights_only=True)`` and
``pe.Weights.from_state_dict(...)``, then ``pe.models.save(weights, "model.safetensors")``.
"""

from __future__ import annotations

import io
import json
import struct
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .._files import check_output_path, write_atomic
from ..errors import PathexpandError, WeightsFileError
from ..numeric.weights import Config, Weights
from .tokenizer import get_tokenizer

__all__ = ["PICKLE_SUFFIXES", "SUFFIXES", "file_shapes", "read_card", "read_file", "save"]

SUFFIXES = (".safetensors", ".npz")
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".pkl", ".pickle", ".ckpt", ".joblib")
CONFIG_KEY = "pathexpand.config"
CARD_KEY = "pathexpand.card"
_NPZ_CONFIG = "__pathexpand__.config"
_NPZ_CARD = "__pathexpand__.card"
_MAX_HEADER = 100_000_000  # safetensors' own limit on the JSON header


def save(weights: Weights, path, card: Mapping[str, Any] | None = None) -> Path:
    """Write ``weights`` to ``path`` (``.safetensors`` or ``.npz``) with its config and card.

    ``card`` defaults to ``weights.card``; when given explicitly it is also written as the
    sidecar ``<stem>.json`` (pretty JSON), which is how the bundled models keep their cards.
    Returns the path written.
    """
    if not isinstance(weights, Weights):
        raise PathexpandError(f"save() needs pathexpand Weights, got {type(weights).__name__}")
    path = Path(path)
    if path.suffix not in SUFFIXES:
        raise WeightsFileError(
            f"cannot save to {str(path)!r}: the suffix must be one of {list(SUFFIXES)}"
        )
    path = check_output_path(path, "model.safetensors", weights=True)
    card_given = card is not None
    card = dict(card if card_given else weights.card or {})
    config_json = json.dumps(weights.config.to_dict())
    card_json = _dumps(card) if card else None
    arrays = {k: np.ascontiguousarray(v) for k, v in weights.state_dict().items()}
    if path.suffix == ".safetensors":
        from safetensors.numpy import save

        metadata = {CONFIG_KEY: config_json}
        if card_json:
            metadata[CARD_KEY] = card_json
        payload = save(arrays, metadata=metadata)
    else:
        extra = {_NPZ_CONFIG: np.array(config_json)}
        if card_json:
            extra[_NPZ_CARD] = np.array(card_json)
        buf = io.BytesIO()
        np.savez(buf, **arrays, **extra)
        payload = buf.getvalue()
    write_atomic(path, payload)     # whole or not at all; the usual permissions
    if card_given:
        write_atomic(path.with_suffix(".json"), _dumps(card, indent=2) + "\n")
    return path


def read_file(path, *, name: str | None = None, card: Mapping[str, Any] | None = None,
              config: Mapping[str, Any] | None = None) -> Weights:
    """A validated ``Weights`` from a ``.safetensors`` or ``.npz`` file (see module docstring).

    ``config``: fields that override the stored config (or, for a file without one, the
    values inferred from the shapes). A file with no stored config whose positional
    embedding or MLP activation had to be guessed says so in a ``UserWarning``.

    Raises ``WeightsFileError`` for anything that is not such a file (pickles, truncated or
    renamed files) and ``PathexpandError``/``ShapeError`` for wrong contents; nothing is
    returned half-loaded.
    """
    path = Path(path)
    _refuse_pickle_suffix(path)
    if not path.exists():
        raise WeightsFileError(f"no such file: {str(path)!r}")
    if not path.is_file():
        raise WeightsFileError(f"{str(path)!r} is not a file")
    if path.suffix not in SUFFIXES:
        raise WeightsFileError(
            f"{str(path)!r}: unsupported file type {path.suffix or '(no suffix)'!r}; "
            f"weights files are {list(SUFFIXES)}"
        )
    _check_magic(path)
    if path.suffix == ".safetensors":
        arrays, stored, file_card = _read_safetensors(path)
    else:
        arrays, stored, file_card = _read_npz(path)
    if card is None:
        card = read_card(path) or file_card
    card = dict(card or {})
    overrides = dict(config or {})
    config = stored
    if config is None and isinstance(card.get("config"), Mapping):
        config = dict(card["config"])
    if config is None:
        _warn_guessed(path, arrays, overrides)
    tokenizer = get_tokenizer(card.get("tokenizer"))
    name = name or card.get("name") or path.stem
    try:
        return Weights.from_state_dict(arrays, **{**(config or {}), **overrides}, name=name, card=card,
                                       tokenizer=tokenizer)
    except PathexpandError as exc:
        raise type(exc)(f"{path.name}: {exc}") from None


def _warn_guessed(path: Path, arrays: Mapping[str, Any], overrides: Mapping[str, Any]) -> None:
    """Warn when a file without a stored config leaves a setting to a guess shapes cannot make."""
    import warnings

    keys = set(arrays)
    guessed = []
    if {"W_pos", "pos_embed.W_pos"} & keys and "positional" not in overrides:
        guessed.append("positional='standard' (pass positional='shortformer' if positions "
                       "entered only the queries and keys)")
    if any(k.endswith("W_in") for k in keys) and "act_fn" not in overrides:
        guessed.append("act_fn='gelu_new' (pass act_fn='gelu' or 'relu' if the model used those)")
    if guessed:
        warnings.warn(f"{path.name} stores no config; assuming " + "; ".join(guessed)
                      + ". Save with pe.save to keep the config.", UserWarning, stacklevel=4)


def read_card(path) -> dict | None:
    """The sidecar card ``<stem>.json`` next to a weights file, or None when there is none."""
    side = Path(path).with_suffix(".json")
    if not side.is_file():
        return None
    try:
        card = json.loads(side.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WeightsFileError(f"model card {str(side)!r} is not valid JSON: {exc}") from None
    if not isinstance(card, dict):
        raise WeightsFileError(f"model card {str(side)!r} must be a JSON object")
    return card


def file_shapes(path) -> dict[str, tuple[int, ...]]:
    """Parameter shapes of a ``.safetensors`` file, read from its header only (no weights)."""
    header = _safetensors_header(Path(path))
    return {k: tuple(v["shape"]) for k, v in header.items() if k != "__metadata__"}


# readers ------------------------------------------------------------------------------------
_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I16": "<i2",
           "I8": "i1", "U8": "u1", "BOOL": "?"}


def _read_bfloat16(path: Path, header: dict) -> dict[str, np.ndarray]:
    """Every tensor of a file with bfloat16 tensors (numpy has no bfloat16): read from the byte
    offsets in the header, bfloat16 widened exactly to float32 (its bits are float32's top 16)."""
    n = struct.unpack("<Q", path.read_bytes()[:8])[0]
    data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + n)
    out = {}
    for key, info in header.items():
        if key == "__metadata__":
            continue
        begin, end = (int(x) for x in info["data_offsets"])
        raw = np.asarray(data[begin:end])
        if info["dtype"] == "BF16":
            a = (raw.view("<u2").astype(np.uint32) << 16).view(np.float32)
        elif info["dtype"] in _DTYPES:
            a = raw.view(_DTYPES[info["dtype"]])
        else:
            raise WeightsFileError(f"{str(path)!r}: tensor {key!r} has dtype {info['dtype']}, "
                                   f"which pathexpand cannot read")
        try:
            out[key] = a.reshape(info["shape"])
        except ValueError:
            raise WeightsFileError(f"{str(path)!r}: tensor {key!r} does not fill its shape "
                                   f"{info['shape']}") from None
    return out


def _read_safetensors(path: Path):
    header = _safetensors_header(path)
    if any(isinstance(v, dict) and v.get("dtype") == "BF16" for v in header.values()):
        metadata = header.get("__metadata__") or {}
        return (_read_bfloat16(path, header), _json_meta(metadata.get(CONFIG_KEY), path, CONFIG_KEY),
                _json_meta(metadata.get(CARD_KEY), path, CARD_KEY))
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="np") as fh:
            metadata = fh.metadata() or {}
            arrays = {k: fh.get_tensor(k) for k in fh.keys()}
    except (SafetensorError, OSError, ValueError, TypeError) as exc:
        raise WeightsFileError(f"{str(path)!r} is not a readable .safetensors file: {exc}") from None
    if set(arrays) != {k for k in header if k != "__metadata__"}:  # pragma: no cover - defensive
        raise WeightsFileError(f"{str(path)!r}: header and tensors disagree")
    config = _json_meta(metadata.get(CONFIG_KEY), path, CONFIG_KEY)
    card = _json_meta(metadata.get(CARD_KEY), path, CARD_KEY)
    return arrays, config, card


def _safetensors_header(path: Path) -> dict:
    """Check the 8-byte length + JSON header by hand, so a wrong file gets a clear message."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise WeightsFileError(f"{str(path)!r} is not a .safetensors file: only {size} bytes")
        (n,) = struct.unpack("<Q", head)
        first = fh.read(1)
        if n < 2 or n > _MAX_HEADER or first != b"{":
            raise WeightsFileError(
                f"{str(path)!r} is not a .safetensors file (no safetensors header; "
                f"it starts with {head[:8]!r})"
            )
        if 8 + n > size:
            raise WeightsFileError(
                f"{str(path)!r} is truncated: its header needs {8 + n} bytes, the file has {size}"
            )
        raw = first + fh.read(n - 1)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise WeightsFileError(
            f"{str(path)!r} is not a .safetensors file (header is not JSON)"
        ) from None
    if not isinstance(header, dict):
        raise WeightsFileError(f"{str(path)!r} is not a .safetensors file (header is not an object)")
    end = 0
    for key, info in header.items():
        if key == "__metadata__":
            continue
        try:
            end = max(end, int(info["data_offsets"][1]))
        except (KeyError, TypeError, ValueError, IndexError):
            raise WeightsFileError(f"{str(path)!r}: malformed header entry for {key!r}") from None
    if 8 + n + end > size:
        raise WeightsFileError(
            f"{str(path)!r} is truncated: tensors need {8 + n + end} bytes, the file has {size}"
        )
    return header


def _read_npz(path: Path):
    try:
        with zipfile.ZipFile(path) as zf:
            members = zf.namelist()
            bad = zf.testzip()
    except (zipfile.BadZipFile, EOFError, OSError) as exc:
        raise WeightsFileError(
            f"{str(path)!r} is not a readable .npz archive (truncated or not a zip): {exc}"
        ) from None
    if bad is not None:
        raise WeightsFileError(f"{str(path)!r} is corrupt: member {bad!r} fails its CRC check")
    pickled = [m for m in members if m.endswith(".pkl")]
    if pickled:
        raise WeightsFileError(
            f"{str(path)!r} is a torch.save archive (it holds {pickled[0]!r}), a pickle; "
            "refused, never unpickled"
        )
    odd = [m for m in members if not m.endswith(".npy")]
    if odd:
        raise WeightsFileError(f"{str(path)!r} is not an .npz of arrays: it holds {odd[:3]}")
    arrays: dict[str, np.ndarray] = {}
    try:
        with np.load(path, allow_pickle=False) as npz:
            for key in npz.files:
                arrays[key] = npz[key]
    except ValueError as exc:  # object arrays: "Object arrays cannot be loaded when allow_pickle=False"
        raise WeightsFileError(
            f"{str(path)!r} holds object arrays (pickled Python objects); refused, never unpickled ({exc})"
        ) from None
    except (zipfile.BadZipFile, EOFError, OSError) as exc:
        raise WeightsFileError(f"{str(path)!r} is not a readable .npz archive: {exc}") from None
    config = _json_meta(_npz_str(arrays.pop(_NPZ_CONFIG, None), path), path, _NPZ_CONFIG)
    card = _json_meta(_npz_str(arrays.pop(_NPZ_CARD, None), path), path, _NPZ_CARD)
    return arrays, config, card


def _npz_str(a, path):
    if a is None:
        return None
    if a.ndim != 0 or a.dtype.kind != "U":
        raise WeightsFileError(
            f"{str(path)!r}: metadata entry must be a 0-d string array, got {a.dtype} {a.shape}"
        )
    return str(a)


def _json_meta(text, path, key):
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        raise WeightsFileError(f"{str(path)!r}: metadata {key!r} is not valid JSON") from None
    if not isinstance(value, dict):
        raise WeightsFileError(f"{str(path)!r}: metadata {key!r} must be a JSON object")
    if key in (CONFIG_KEY, _NPZ_CONFIG):
        unknown = set(value) - set(Config.__dataclass_fields__)
        if unknown:
            raise WeightsFileError(
                f"{str(path)!r}: config has unknown field(s) {sorted(unknown)}; "
                f"fields are {sorted(Config.__dataclass_fields__)}"
            )
    return value


# pickles ----------------------------------------------------------------------------------
def _refuse_pickle_suffix(path: Path) -> None:
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise WeightsFileError(
            f"{str(path)!r}: {path.suffix} files are pickles and are refused (never unpickled). "
            "Convert it yourself: sd = torch.load(path, weights_only=True); "
            "pe.models.save(pe.Weights.from_state_dict(sd), 'model.safetensors')"
        )


def _check_magic(path: Path) -> None:
    """The file's own format first (a safetensors header, a zip archive); only a file that is
    not one is examined as a possible pickle, so a safetensors header length whose low bytes
    happen to read 0x80 0x02 (640, 896, ... bytes) is never taken for pickle magic."""
    with open(path, "rb") as fh:
        head = fh.read(4)
    if path.suffix == ".safetensors":
        try:
            _safetensors_header(path)
            return
        except WeightsFileError:
            _refuse_pickle_bytes(path, head)
            raise
    if head != b"PK\x03\x04":
        _refuse_pickle_bytes(path, head)


def _refuse_pickle_bytes(path: Path, head: bytes) -> None:
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        raise WeightsFileError(
            f"{str(path)!r} is a Python pickle (protocol {head[1]}) despite its {path.suffix} "
            "suffix; refused, never unpickled"
        )


def _dumps(obj, indent=None) -> str:
    try:
        return json.dumps(obj, indent=indent, ensure_ascii=False, default=_jsonable)
    except TypeError as exc:
        raise PathexpandError(f"model card must be JSON-serialisable: {exc}") from None


def _jsonable(obj):
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")
