"""Where models come from: the default shipped in the package, plus any the user names.

Models are identified by the sha256 of their file. A :class:`ModelStore` maps those ids to
loaded models so a decoder picks exactly the network that encoded a stream, and refuses with a
clear message when it does not have it.
"""

from __future__ import annotations

import functools
from importlib import resources
from pathlib import Path

from aezip.errors import ModelMismatchError
from aezip.model.weights import LoadedModel, load_model

DEFAULT_MODEL_FILE = "default.safetensors"


def default_model_path() -> Path:
    """Path of the model file shipped inside the package."""
    return Path(str(resources.files("aezip.model") / "weights" / DEFAULT_MODEL_FILE))


@functools.lru_cache(maxsize=2)
def _load_default(path: str, size: int, mtime_ns: int) -> LoadedModel:
    """Cached by size and mtime, so a replaced file is read again."""
    return load_model(path)


class ModelStore:
    """Loaded models by id; the default model is loaded on first use only."""

    def __init__(self, models: list[str | Path | LoadedModel] | None = None, include_default: bool = True) -> None:
        self._by_id: dict[bytes, LoadedModel] = {}
        self._include_default = include_default
        self._default_loaded = False
        for m in models or []:
            self.add(m)

    def add(self, model: str | Path | LoadedModel) -> LoadedModel:
        """Register a model (a path is loaded and hash-checked) and return it."""
        loaded = model if isinstance(model, LoadedModel) else load_model(model)
        self._by_id.setdefault(loaded.model_id, loaded)
        return self._by_id[loaded.model_id]

    def default(self) -> LoadedModel:
        """The shipped default model (read and hash-checked once per process)."""
        path = default_model_path()
        stat = path.stat()
        loaded = _load_default(str(path), stat.st_size, stat.st_mtime_ns)
        self._default_loaded = True
        return self.add(loaded)

    def get(self, model_id: bytes) -> LoadedModel:
        """The model with this id, or :class:`ModelMismatchError` naming the missing id."""
        if model_id not in self._by_id and self._include_default and not self._default_loaded:
            self.default()
        try:
            return self._by_id[model_id]
        except KeyError:
            raise ModelMismatchError(
                f"encoded with model {model_id.hex()}, which is not loaded (pass its file with --model)"
            ) from None
