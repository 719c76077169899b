"""Where a model's context tables (the ``ans-ctx`` side file) come from, and loading them on first use.

The tables themselves (their stream method and file layout) are :mod:`aezip.entropy.context`; this
module only knows models: the shipped ones name their side file and its sha256 in ``catalog.json``,
a user's model ``NAME.safetensors`` has it beside it as ``NAME.ctx.safetensors``.
"""

from __future__ import annotations

import functools
import hashlib
import json
from importlib import resources
from pathlib import Path

from aezip.entropy.context import SIDE_SUFFIX, ContextModel, ContextTables, context_from_bytes
from aezip.errors import ModelError
from aezip.model.weights import LoadedModel


def side_file_path(model_path: Path) -> Path:
    """Where a user model's context tables live: ``NAME.ctx.safetensors`` beside ``NAME.safetensors``."""
    stem = model_path.name.removesuffix(".safetensors")
    return model_path.with_name(stem + SIDE_SUFFIX)


@functools.lru_cache(maxsize=1)
def _shipped_side_files() -> dict[str, tuple[Path, str]]:
    """Model sha256 → (file, sha256) of the shipped context tables, from ``catalog.json``."""
    weights = Path(str(resources.files("aezip.model") / "weights"))
    catalog = json.loads((weights / "catalog.json").read_text(encoding="utf-8"))
    return {
        m["sha256"]: (weights / m["context_tables"]["file"], m["context_tables"]["sha256"])
        for m in catalog["models"]
        if m.get("context_tables")
    }


def load_context(model: LoadedModel) -> ContextModel | None:
    """The model's context tables, read on first use (``None`` when it has none).

    Shipped models: the file named by ``catalog.json``, checked against the sha256 there.
    Other models: ``NAME.ctx.safetensors`` beside the model file, if present. Either must
    record the model's own sha256.
    """
    if model.context is not None:
        return model.context
    cfg = model.config
    shipped = _shipped_side_files().get(model.sha256)
    if shipped is not None:
        path, expected = shipped
    elif model.path is not None and side_file_path(model.path).is_file():
        path, expected = side_file_path(model.path), None
    else:
        return None
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelError(f"cannot read context tables {path}: {exc.strerror or exc}") from None
    if expected is not None and hashlib.sha256(data).hexdigest() != expected:
        raise ModelError(f"shipped context tables {path} are damaged (sha256 differs from the catalog)")
    model.context = context_from_bytes(data, model.sha256, cfg.bottleneck, cfg.qualities, str(path))
    return model.context


def context_file_bytes(model: LoadedModel) -> bytes | None:
    """The bytes of the side file a user's model read its context tables from (for embedding in an
    archive), checked to be the tables loaded; ``None`` when none were loaded or the model is shipped."""
    if model.context is None or model.sha256 in _shipped_side_files() or model.path is None:
        return None
    path = side_file_path(model.path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelError(f"cannot read context tables {path}: {exc.strerror or exc}") from None
    if hashlib.sha256(data).hexdigest() != model.context.sha256:
        raise ModelError(f"context tables {path} changed while packing")
    return data


def attach_context(model: LoadedModel, data: bytes, source: str) -> None:
    """Give ``model`` the context tables in ``data`` (an embedded side file); :class:`ModelError` if unfit."""
    cfg = model.config
    model.context = context_from_bytes(data, model.sha256, cfg.bottleneck, cfg.qualities, source)


def context_tables(model: LoadedModel, quality: int) -> ContextTables | None:
    """Context tables of ``quality`` (1-based) for this model, or ``None``."""
    loaded = load_context(model)
    return None if loaded is None else loaded.qualities[quality - 1]
