"""Where models come from: every model aezip ever shipped as a default, plus any the user names.

Models are identified by the sha256 of their file. The package keeps each model that was ever a
default (``weights/catalog.json`` lists them, with their hashes and the releases they were the
default in), so an archive written by any release decodes with every later one. A
:class:`ModelStore` maps ids to loaded models so a decoder picks exactly the network that encoded
a stream: a shipped model is loaded on first use and its bytes are checked against the catalog's
hash; an unknown id is refused with a clear message.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from aezip.errors import ModelError, ModelMismatchError
from aezip.model.weights import MODEL_ID_BYTES, LoadedModel, load_model

CATALOG_FILE = "catalog.json"


@dataclass(frozen=True)
class ShippedModel:
    """One entry of the catalog: a model file inside the package."""

    name: str
    file: str
    sha256: str
    default_in: tuple[str, ...]
    summary: str

    @property
    def model_id(self) -> bytes:
        """The id archives record for this model."""
        return bytes.fromhex(self.sha256)[:MODEL_ID_BYTES]

    @property
    def path(self) -> Path:
        return _weights_dir() / self.file


def _weights_dir() -> Path:
    return Path(str(resources.files("aezip.model") / "weights"))


@functools.lru_cache(maxsize=1)
def _catalog() -> tuple[str, tuple[ShippedModel, ...]]:
    raw = json.loads((_weights_dir() / CATALOG_FILE).read_text(encoding="utf-8"))
    models = tuple(
        ShippedModel(m["name"], m["file"], m["sha256"], tuple(m["default_in"]), m["summary"]) for m in raw["models"]
    )
    return raw["default"], models


def shipped_models() -> list[ShippedModel]:
    """Every model shipped in the package, oldest first."""
    return list(_catalog()[1])


def default_model() -> ShippedModel:
    """The catalog entry of the current default model."""
    name, models = _catalog()
    return next(m for m in models if m.name == name)


def default_model_path() -> Path:
    """Path of the default model file shipped inside the package."""
    return default_model().path


def model_name(model_id: bytes) -> str | None:
    """The shipped name of a model id (``None`` for a model that aezip does not ship)."""
    return next((m.name for m in shipped_models() if m.model_id == model_id), None)


@functools.lru_cache(maxsize=4)
def _load_shipped(path: str, sha256: str, size: int, mtime_ns: int) -> LoadedModel:
    """Load and hash-check a shipped model; cached by size and mtime, so a replaced file is read again."""
    model = load_model(path)
    if model.sha256 != sha256:
        raise ModelError(f"shipped model {path} is damaged (sha256 {model.sha256}, expected {sha256})")
    return model


def load_shipped(entry: ShippedModel) -> LoadedModel:
    """The loaded network of a catalog entry (read and hash-checked once per process)."""
    stat = entry.path.stat()
    model = _load_shipped(str(entry.path), entry.sha256, stat.st_size, stat.st_mtime_ns)
    model.name = entry.name
    return model


class ModelStore:
    """Loaded models by id; shipped models are loaded on first use only."""

    def __init__(self, models: list[str | Path | LoadedModel] | None = None, include_shipped: bool = True) -> None:
        self._by_id: dict[bytes, LoadedModel] = {}
        self._include_shipped = include_shipped
        for m in models or []:
            self.add(m)

    def add(self, model: str | Path | LoadedModel) -> LoadedModel:
        """Register a model (a path is loaded and hash-checked) and return it."""
        loaded = model if isinstance(model, LoadedModel) else load_model(model)
        self._by_id.setdefault(loaded.model_id, loaded)
        return self._by_id[loaded.model_id]

    def default(self) -> LoadedModel:
        """The current default model."""
        return self.add(load_shipped(default_model()))

    def get(self, model_id: bytes) -> LoadedModel:
        """The model with this id, or :class:`ModelMismatchError` naming the missing id."""
        if model_id not in self._by_id and self._include_shipped:
            entry = next((m for m in shipped_models() if m.model_id == model_id), None)
            if entry is not None:
                self.add(load_shipped(entry))
        try:
            return self._by_id[model_id]
        except KeyError:
            raise ModelMismatchError(
                f"encoded with model {model_id.hex()}, which is not loaded (pass its file with --model)"
            ) from None
