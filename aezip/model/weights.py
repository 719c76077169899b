"""Model files: safetensors weights with the config in the metadata, identified by sha256.

A model file holds the network's tensors under ``net.*`` and the integer entropy-coding tables
under ``tables.*`` (see ``aezip.entropy.tables``). Its identity is the sha256 of the file's
bytes; archives record it, and loading verifies it, so an archive is never decoded with a
different network than the one that encoded it. Nothing is unpickled: safetensors only parses a
JSON header and raw little-endian buffers.

Loading needs no PyTorch: the tensors are read as NumPy arrays (float weights widened to
float32), which is all a CPU decoder uses (:mod:`aezip.model.cpu_synthesis`). The PyTorch network
(:attr:`LoadedModel.net`, for encoding, GPUs and training) is built from them on first use.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from aezip.entropy.safetensors_io import read_safetensors
from aezip.entropy.tables import CdfTables
from aezip.errors import ModelError
from aezip.model.config import ModelConfig

if TYPE_CHECKING:
    from aezip.entropy.context import ContextModel
    from aezip.model.autoencoder import Autoencoder
    from aezip.model.cpu_synthesis import CpuSynthesis

FORMAT_TAG = "aezip-model/1"
MODEL_ID_BYTES = 16  # prefix of the sha256 recorded in archives


@dataclass
class LoadedModel:
    """A network's weights, its entropy tables (one per quality) and its identity.

    ``weights`` are the network's tensors by state-dict name (NumPy; float ones as float32).
    The forms that run are built from them on first use, once (thread-safe): :attr:`net`, the
    PyTorch network, and :meth:`cpu_synthesis`, the NumPy decoder.
    """

    config: ModelConfig
    weights: dict[str, np.ndarray]
    tables: list[CdfTables]
    sha256: str
    metadata: dict[str, str] = field(default_factory=dict)
    path: Path | None = None
    name: str | None = None  # set for the models aezip ships (``aezip.model.registry``)
    context: ContextModel | None = None  # side-file tables of ``ans-ctx``, loaded on first use
    _net: Autoencoder | None = field(default=None, init=False, repr=False)
    _synthesis: CpuSynthesis | None = field(default=None, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    @property
    def model_id(self) -> bytes:
        """The bytes archives store to name this model."""
        return bytes.fromhex(self.sha256)[:MODEL_ID_BYTES]

    @property
    def net(self) -> Autoencoder:
        """The PyTorch network (imports torch; built on first use, in eval mode, on the CPU).

        :class:`ModelError` if the weights do not fit the stored config.
        """
        with self._lock:
            if self._net is None:
                self._net = _build_net(self.config, self.weights, self.path or "model")
            return self._net

    def cpu_synthesis(self) -> CpuSynthesis:
        """The NumPy synthesis transform (no torch; built on first use, about 0.2 s)."""
        from aezip.model.cpu_synthesis import CpuSynthesis

        with self._lock:
            if self._synthesis is None:
                self._synthesis = CpuSynthesis(self.weights, self.config.levels)
            return self._synthesis


def _build_net(config: ModelConfig, weights: dict[str, np.ndarray], source: object) -> Autoencoder:
    import torch

    from aezip.model.autoencoder import Autoencoder

    net = Autoencoder(config)
    try:
        net.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()}, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise ModelError(f"{source}: weights do not match the stored config ({first})") from None
    return net.eval()


def model_to_bytes(
    net: Autoencoder,
    tables: list[CdfTables],
    extra_metadata: dict[str, str] | None = None,
    half: bool = False,
) -> bytes:
    """Serialise a network and its tables; ``half`` stores float weights as fp16 (smaller file)."""
    import torch
    from safetensors.torch import save as st_save

    tensors: dict[str, torch.Tensor] = {}
    for name, value in net.state_dict().items():
        value = value.detach().cpu().contiguous()
        tensors[f"net.{name}"] = value.half() if half and value.is_floating_point() else value
    for q, table in enumerate(tables):
        for name, value in table.to_tensors().items():
            tensors[f"tables.{q}.{name}"] = value
    metadata = {"format": FORMAT_TAG, "config": net.config.to_json()}
    metadata.update(extra_metadata or {})
    return st_save(tensors, metadata=metadata)


def model_from_bytes(data: bytes, source: str = "model") -> LoadedModel:
    """Parse and validate model bytes; raises :class:`ModelError` with a one-line reason."""
    sha = hashlib.sha256(data).hexdigest()
    tensors, metadata = read_safetensors(data, source, "model file")
    if metadata.get("format") != FORMAT_TAG:
        raise ModelError(f"{source}: not an aezip model (format tag {metadata.get('format')!r})")
    config = ModelConfig.from_json(metadata.get("config", ""))
    weights = {
        k[4:]: np.array(v, dtype=np.float32 if v.dtype.kind == "f" else v.dtype)
        for k, v in tensors.items()
        if k.startswith("net.")
    }
    tables = []
    for q in range(config.qualities):
        prefix = f"tables.{q}."
        part = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        if not part:
            raise ModelError(f"{source}: no entropy tables for quality {q + 1}")
        tables.append(CdfTables.from_tensors(part, config.bottleneck))
    return LoadedModel(config=config, weights=weights, tables=tables, sha256=sha, metadata=dict(metadata))


def load_model(path: str | Path) -> LoadedModel:
    """Read a model file from disk (see :func:`model_from_bytes`)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelError(f"cannot read model {path}: {exc.strerror or exc}") from None
    model = model_from_bytes(data, source=str(path))
    model.path = path
    return model
