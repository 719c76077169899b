"""Training from archives at scale: distributed, resumable batches, with optional decode on the GPU.

:class:`ArchiveLoader` is the entry point::

    loader = ArchiveLoader(["a.aez", "b.aez"], batch_size=64, num_workers=4, seed=0)
    for epoch in range(start_epoch, epochs):
        loader.set_epoch(epoch)
        for images in loader:
            ...
            checkpoint["loader"] = loader.state_dict()

The order is a pure function of ``(seed, epoch)`` (see :mod:`aezip.loader.sampling`): the same for any
number of DataLoader workers, split evenly over ranks, resumable mid-epoch on any world size.

Two decode paths:

* ``decode_device=None`` (default): workers decode whole images on the CPU and collate them,
  exactly as ``ImageArchiveDataset`` items;
* ``decode_device="cuda"`` (or ``"cpu"``, the same code on the CPU): workers only read and
  entropy-decode latents (integer work, no CUDA in forked workers) into pinned memory; the main
  process runs the codec's batched synthesis on the device, one pass per latent shape, and
  ``mode`` and ``transform`` then run on the device tensors.

With ``crop``, both paths synthesise only each image's random crop window (and the latents' halo
around it); the windows are a pure function of ``(seed, epoch, image)`` (:func:`crop_positions`),
so they too are the same for any number of workers and after a resume.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, default_collate, get_worker_info

from aezip.archive.container import MemberKind
from aezip.codec.codec import FLAG_GRAY, Codec, StreamHeader, Window, window
from aezip.errors import AezipError
from aezip.loader.dataset import (
    DEFAULT_MAX_BATCH_PIXELS,
    CropAt,
    ImageArchiveDataset,
    Target,
    Transform,
    pad_tensor,
    to_tensor,
)
from aezip.loader.sampling import (
    DEFAULT_BLOCK_SIZE,
    DEFAULT_WINDOW,
    DistributedBlockSampler,
    epoch_order,
    rank_share,
)
from aezip.store.manifest import is_manifest_path, shard_paths

PathLike = str | os.PathLike[str]
Sources = PathLike | ImageArchiveDataset | Sequence[PathLike | ImageArchiveDataset]
DEVICE_MODES = ("L", "LA", "RGB", "RGBA")


class ShardedImageDataset(Dataset):
    """Map-style view of the images of several archives (shards) as one dataset, in source order.

    Item ``i`` is item ``i - offsets[k]`` of source ``k``; ``counts`` are the sources' sizes, the
    input of :mod:`aezip.loader.sampling`. ``sources`` are archive paths (opened with ``options``, the
    keyword arguments of :class:`aezip.ImageArchiveDataset`), manifests of sharded datasets (or
    their folders: each shard becomes one source) or datasets already opened.
    """

    def __init__(self, sources: Sources, **options: Any) -> None:
        if isinstance(sources, (str, os.PathLike, ImageArchiveDataset)):
            sources = [sources]
        sources = [p for s in sources for p in _expand(s)]
        self.datasets = [
            s if isinstance(s, ImageArchiveDataset) else ImageArchiveDataset(s, **options) for s in sources
        ]
        if not self.datasets:
            raise AezipError("no sources given")
        self.counts = [len(d) for d in self.datasets]
        self.offsets = np.concatenate([[0], np.cumsum(self.counts)]).astype(np.int64)

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __repr__(self) -> str:
        return f"ShardedImageDataset(sources={len(self.datasets)}, images={len(self)})"

    def locate(self, index: int) -> tuple[int, int]:
        """(source, item within the source) of a global index."""
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {n} images")
        index %= n
        source = int(np.searchsorted(self.offsets, index, side="right")) - 1
        return source, index - int(self.offsets[source])

    def name(self, index: int) -> tuple[str, str]:
        """(archive path, member name) of a global index."""
        source, local = self.locate(index)
        ds = self.datasets[source]
        return ds.archive.path, ds._members[local].name

    def grouped(self, indices: Sequence[int]) -> list[tuple[int, list[int], list[int]]]:
        """``indices`` by source: (source, positions in ``indices``, items within the source)."""
        groups: dict[int, tuple[list[int], list[int]]] = {}
        for pos, index in enumerate(indices):
            source, local = self.locate(int(index))
            positions, locals_ = groups.setdefault(source, ([], []))
            positions.append(pos)
            locals_.append(local)
        return [(source, p, loc) for source, (p, loc) in groups.items()]

    @property
    def crops(self) -> bool:
        """Whether any source crops its items (``crop``)."""
        return any(d.crop is not None for d in self.datasets)

    def get_batch(self, indices: Sequence[int], crop_at: Sequence[CropAt] | None = None) -> list[Any]:
        """Items at global ``indices``, one batched decode per source (``crop_at``: one crop position
        per index, see :meth:`aezip.ImageArchiveDataset.decode_batch`)."""
        out: list[Any] = [None] * len(indices)
        for source, positions, locals_ in self.grouped(indices):
            at = None if crop_at is None else [crop_at[p] for p in positions]
            for pos, item in zip(positions, self.datasets[source].get_batch(locals_, at), strict=True):
                out[pos] = item
        return out

    def __getitems__(self, indices: Sequence[int]) -> list[Any]:
        return self.get_batch(indices)

    def __getitem__(self, index: int) -> Any:
        return self.get_batch([index])[0]


def _expand(source: PathLike | ImageArchiveDataset) -> list[PathLike | ImageArchiveDataset]:
    """A manifest (or dataset folder) as its shard paths, so each shard is one source; others as they are."""
    if isinstance(source, ImageArchiveDataset) or not is_manifest_path(source):
        return [source]
    return list(shard_paths(source))


@dataclass
class LatentItem:
    """One coded image as a worker hands it over: its stream header and entropy-decoded latents.

    Latents travel as the smallest integer type that holds them (int8 or int16 for nearly every
    image), so the copy to the main process and on to the device moves few bytes.
    """

    position: int
    header: StreamHeader
    latents: torch.Tensor
    alpha: torch.Tensor | None
    #: With a crop: where the crop's image pixels lie in the synthesis of ``latents`` (their window)
    #: as (top, left, height, width), and the crop's (height, width, top, left of those pixels).
    region: tuple[int, int, int, int] | None = None
    place: tuple[int, int, int, int] | None = None


@dataclass
class LatentBatch:
    """A batch as workers hand it over for device decoding (see the module docstring).

    ``ready`` holds items that need no synthesis (losslessly stored images, already tensors);
    ``targets`` the targets by position when the dataset has a ``target``.
    """

    size: int
    coded: list[LatentItem] = field(default_factory=list)
    ready: dict[int, torch.Tensor] = field(default_factory=dict)
    targets: list[Any] | None = None

    def pin_memory(self) -> LatentBatch:
        """Page-lock the tensors (DataLoader's ``pin_memory`` thread calls this) for fast, async copies."""
        for item in self.coded:
            item.latents = item.latents.pin_memory()
            item.alpha = item.alpha.pin_memory() if item.alpha is not None else None
        self.ready = {k: v.pin_memory() for k, v in self.ready.items()}
        return self


def _compact(latents: np.ndarray) -> torch.Tensor:
    """Integer latents in the smallest of int8, int16, int32 that holds them."""
    low, high = (int(latents.min()), int(latents.max())) if latents.size else (0, 0)
    for dtype in (np.int8, np.int16):
        info = np.iinfo(dtype)
        if info.min <= low and high <= info.max:
            return torch.from_numpy(latents.astype(dtype))
    return torch.from_numpy(latents.astype(np.int32, copy=False))


def crop_positions(seed: int, epoch: int, indices: Sequence[int]) -> list[list[float]]:
    """Crop positions (see :func:`aezip.loader.dataset.crop_window`) of the images at global ``indices``:
    drawn from a generator seeded by (seed, epoch, index), so they depend on nothing else."""
    return [np.random.default_rng([seed % 2**64, epoch, int(i)]).random(2).tolist() for i in indices]


def read_latents(
    dataset: ShardedImageDataset, indices: Sequence[int], mode: str | None, crop_at: Sequence[CropAt] | None = None
) -> LatentBatch:
    """Worker side of device decoding: read and entropy-decode the latents of ``indices``; with a
    crop (``crop_at``: one position per index), keep only the latent window each crop needs."""
    batch = LatentBatch(size=len(indices))
    targets: list[Any] = [None] * len(indices)
    has_target = False
    for source, positions, locals_ in dataset.grouped(indices):
        ds = dataset.datasets[source]
        coded = [ds._members[i].name for i in locals_ if ds._members[i].kind == MemberKind.IMAGE]
        streams = dict(zip(coded, ds.archive.payloads(coded), strict=True))  # nearby payloads read together
        for pos, local in zip(positions, locals_, strict=True):
            info = ds._members[local]
            if ds.target is not None:
                targets[pos] = ds.target(info.name, ds)
                has_target = True
            at = None if crop_at is None or ds.crop is None else crop_at[pos]
            if info.kind != MemberKind.IMAGE:
                image, offset = ds._raw(info.name, at)
                if mode is not None and image.mode != mode:
                    image = image.convert(mode)
                pixels = to_tensor(image)
                batch.ready[pos] = pixels if at is None or ds.crop is None else pad_tensor(pixels, ds.crop, offset)
                continue
            header, model, latents, (alpha, _icc) = ds.codec._parse(streams[info.name])
            region = place = None
            if at is not None and ds.crop is not None:
                box, (dy, dx) = ds.crop_window(info.name, header.width, header.height, at)
                win = window(model, header.quality - 1, latents, box)
                latents, region, place = win.latents, (win.y, win.x, win.height, win.width), (*ds.crop, dy, dx)
                if alpha is not None:
                    alpha = np.ascontiguousarray(alpha[box[1] : box[3], box[0] : box[2]])
            alpha_t = torch.from_numpy(alpha) if alpha is not None else None
            batch.coded.append(LatentItem(pos, header, _compact(latents), alpha_t, region, place))
    batch.targets = targets if has_target else None
    return batch


def convert_mode(pixels: torch.Tensor, source: str, target: str) -> torch.Tensor:
    """uint8 (C, H, W) pixels from one of L, LA, RGB, RGBA to another, as ``PIL.Image.convert`` does."""
    if source == target:
        return pixels
    if target not in DEVICE_MODES:
        raise AezipError(f"mode {target!r} is not available with decode_device; use one of {', '.join(DEVICE_MODES)}")
    color = pixels[:3] if source in ("RGB", "RGBA") else pixels[:1]
    alpha = pixels[-1:] if source in ("LA", "RGBA") else torch.full_like(pixels[:1], 255)
    if target in ("L", "LA") and color.shape[0] == 3:
        r, g, b = color.to(torch.int32).unbind(0)
        color = ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).to(torch.uint8).unsqueeze(0)
    elif target in ("RGB", "RGBA") and color.shape[0] == 1:
        color = color.expand(3, -1, -1)
    return torch.cat([color, alpha]) if target in ("LA", "RGBA") else color.contiguous()


class DeviceDecoder:
    """Main-process side of device decoding: synthesis of a :class:`LatentBatch` on ``device``.

    Runs the codec's own batched synthesis (one pass per latent shape, at most ``max_batch_pixels``
    output pixels each), so it produces the same tensors as the CPU path (float32 (C, H, W) in
    [0, 1], C by the image's mode) up to the float rounding of the device.
    """

    def __init__(
        self,
        device: str = "cuda",
        models: Sequence[str | Path] | None = None,
        max_batch_pixels: int = DEFAULT_MAX_BATCH_PIXELS,
        precision: str = "fp32",
    ) -> None:
        self.codec = Codec(device=device, models=list(models or []), precision=precision)
        self.device = self.codec.device
        self.max_batch_pixels = max_batch_pixels

    def __call__(self, batch: LatentBatch, mode: str | None = None) -> list[torch.Tensor]:
        """The images of ``batch`` on the device, in batch order, converted to ``mode`` if given."""
        out: list[torch.Tensor | None] = [None] * batch.size
        for pos, tensor in batch.ready.items():
            out[pos] = tensor.to(self.device, non_blocking=True)
        alphas = [i.alpha.to(self.device, non_blocking=True) if i.alpha is not None else None for i in batch.coded]
        store = self.codec.store
        whole = [n for n, i in enumerate(batch.coded) if i.region is None]
        items = [batch.coded[n] for n in whole]
        parsed = [(i.header, store.get(i.header.model_id), i.latents.numpy(), ()) for i in items]
        for chunk, pixels in self.codec._synthesize(parsed, self.max_batch_pixels):
            for k, j in enumerate(chunk):
                item, image = items[j], pixels[k, :, : items[j].header.height, : items[j].header.width]
                out[item.position] = self._finish(item, image, alphas[whole[j]], mode)
        cropped = [n for n, i in enumerate(batch.coded) if i.region is not None]
        windows = [self._window(batch.coded[n]) for n in cropped]
        for j, pixels in self.codec._synthesize_windows(windows, self.max_batch_pixels):
            n = cropped[j]
            if isinstance(pixels, np.ndarray):  # the NumPy decoder (decode_device="cpu")
                pixels = torch.from_numpy(pixels).permute(2, 0, 1)
            out[batch.coded[n].position] = self._finish(batch.coded[n], pixels, alphas[n], mode)
        return [t for t in out if t is not None]

    def _window(self, item: LatentItem) -> Window:
        assert item.region is not None
        model = self.codec.store.get(item.header.model_id)
        return Window(model, item.header.quality - 1, item.latents.numpy(), *item.region)

    @staticmethod
    def _finish(item: LatentItem, image: torch.Tensor, alpha: torch.Tensor | None, mode: str | None) -> torch.Tensor:
        """uint8 RGB pixels (3, H, W) of an item → its float tensor: gray and alpha as coded, ``mode``, crop padding."""
        own = "RGB"
        if item.header.flags & FLAG_GRAY:
            image = image.float().mean(0, keepdim=True).round_().to(torch.uint8)
            own = "L"
        if alpha is not None:
            image = torch.cat([image, alpha.unsqueeze(0)])
            own += "A"
        if mode is not None:
            image = convert_mode(image, own, mode)
        if item.place is not None:
            height, width, dy, dx = item.place
            image = pad_tensor(image, (height, width), (dy, dx))
        return image.float().div_(255.0)


class ArchiveStream(IterableDataset):
    """This rank's batches of an epoch, for ``DataLoader(stream, batch_size=None)``.

    Batch ``j`` of the rank's share (see :mod:`aezip.loader.sampling`) is made by worker
    ``j % num_workers``, so a DataLoader yields the batches in the same order for any number of
    workers. The (seed, epoch, position) to iterate live in shared memory, so persistent workers
    see :meth:`set_position` from the main process. Implements ``state_dict``/``load_state_dict``
    for torchdata's ``StatefulDataLoader`` (per worker: the batches it yielded).
    """

    def __init__(
        self,
        dataset: ShardedImageDataset,
        batch_size: int,
        *,
        seed: int = 0,
        shuffle: bool = True,
        rank: int = 0,
        world_size: int = 1,
        uneven: str = "wrap",
        drop_last: bool = False,
        block_size: int = DEFAULT_BLOCK_SIZE,
        window: int = DEFAULT_WINDOW,
        collate_fn: Callable[[list[Any]], Any] | None = None,
        latents: bool = False,
        mode: str | None = None,
    ) -> None:
        if batch_size < 1:
            raise AezipError("batch_size must be positive")
        self.dataset = dataset
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.rank, self.world_size = rank, world_size
        self.uneven = uneven
        self.drop_last = drop_last
        self.block_size, self.window = block_size, window
        self.collate_fn = collate_fn or default_collate
        self.latents = latents
        self.mode = mode
        self._control = torch.tensor([seed, 0, 0], dtype=torch.int64).share_memory_()
        self._skip = 0
        self._current = (seed, 0, 0)
        self._yielded = 0

    def set_position(self, seed: int, epoch: int, position: int) -> None:
        """Iterate epoch ``epoch`` of ``seed`` from global position ``position`` from the next ``iter()`` on."""
        self._control.copy_(torch.tensor([seed, epoch, position], dtype=torch.int64))

    def set_epoch(self, epoch: int) -> None:
        """Iterate ``epoch`` from its start from the next ``iter()`` on."""
        self.set_position(int(self._control[0]), epoch, 0)

    def indices(self, seed: int, epoch: int, position: int) -> np.ndarray:
        """This rank's samples of the epoch from ``position`` on."""
        order = epoch_order(self.dataset.counts, seed, epoch, self.shuffle, self.block_size, self.window)
        return rank_share(order, position, self.rank, self.world_size, self.uneven)

    def batch_sizes(self, samples: int) -> list[int]:
        """Sizes of the batches ``samples`` samples make."""
        full, rest = divmod(samples, self.batch_size)
        return [self.batch_size] * full + ([rest] if rest and not self.drop_last else [])

    def __iter__(self) -> Iterator[Any]:
        seed, epoch, position = (int(v) for v in self._control.tolist())
        self._current = (seed, epoch, position)
        indices = self.indices(seed, epoch, position)
        batches = len(self.batch_sizes(len(indices)))
        worker = get_worker_info()
        wid, workers = (worker.id, worker.num_workers) if worker is not None else (0, 1)
        skip, self._skip = self._skip, 0
        self._yielded = skip
        for j in range(wid + skip * workers, batches, workers):
            chunk = indices[j * self.batch_size : (j + 1) * self.batch_size].tolist()
            at = crop_positions(seed, epoch, chunk) if self.dataset.crops else None
            if self.latents:
                out: Any = read_latents(self.dataset, chunk, self.mode, at)
            else:
                out = self.collate_fn(self.dataset.get_batch(chunk, at))
            self._yielded += 1
            yield out

    def state_dict(self) -> dict:
        """(seed, epoch, position) of the running iteration and the batches this worker yielded."""
        seed, epoch, position = self._current
        return {"seed": seed, "epoch": epoch, "position": position, "batches": self._yielded}

    def load_state_dict(self, state: dict) -> None:
        """Resume: the next ``iter()`` continues after the batches this worker had yielded."""
        self.set_position(int(state["seed"]), int(state["epoch"]), int(state["position"]))
        self._skip = int(state["batches"])


def as_is(batch: Any) -> Any:
    """The DataLoader's per-batch conversion: none (batches are already collated as asked)."""
    return batch


class ArchiveLoader:
    """Batches of one rank over one or more archives: deterministic, resumable, optionally GPU-decoded.

    ``sources``: an archive path, a list of paths (shards), or datasets (:class:`ShardedImageDataset`,
    :class:`aezip.ImageArchiveDataset`). ``transform``, ``target``, ``mode``, ``output`` and
    ``models`` open paths as :class:`aezip.ImageArchiveDataset` does, and so do ``crop`` and
    ``pad_if_needed`` (random crops of which only the window is synthesised); here the windows are
    a pure function of ``(seed, epoch, image)``, the same for any number of workers and on resume.

    Sampling (:mod:`aezip.loader.sampling`): ``seed``, ``shuffle``, ``block_size``, ``window``;
    ``rank``/``world_size`` (default ``RANK``/``WORLD_SIZE`` or the ``torch.distributed`` group);
    ``uneven="wrap"`` (repeat a few samples) or ``"drop"`` so every rank gets as many samples;
    ``drop_last`` drops a last partial batch. Iterating again after a complete epoch starts the
    next one; :meth:`set_epoch` chooses one explicitly (as for ``DistributedSampler``).

    Decoding: ``decode_device=None`` decodes in the workers; ``"cuda"`` (or ``"cpu"``, ``"auto"``)
    synthesises in the main process on that device (``transform`` runs there too, on device
    tensors; ``output`` must be ``"tensor"``). ``num_workers``, ``prefetch_factor``,
    ``persistent_workers``, ``pin_memory`` (default: on for ``decode_device="cuda"``) and
    ``multiprocessing_context`` go to the DataLoader.

    Resume: :meth:`state_dict` (seed, epoch, global position, samples seen) taken at the same step on
    every rank; :meth:`load_state_dict` on a loader with any world size continues with exactly the
    samples not yet consumed.
    """

    def __init__(
        self,
        sources: Sources | ShardedImageDataset,
        batch_size: int,
        *,
        seed: int = 0,
        shuffle: bool = True,
        rank: int | None = None,
        world_size: int | None = None,
        uneven: str = "wrap",
        drop_last: bool = False,
        block_size: int = DEFAULT_BLOCK_SIZE,
        window: int = DEFAULT_WINDOW,
        transform: Transform | None = None,
        target: Target | None = None,
        mode: str | None = None,
        output: str = "tensor",
        models: Sequence[str | Path] | None = None,
        crop: int | Sequence[int] | None = None,
        pad_if_needed: bool = True,
        collate_fn: Callable[[list[Any]], Any] | None = None,
        decode_device: str | None = None,
        precision: str = "fp32",
        max_batch_pixels: int = DEFAULT_MAX_BATCH_PIXELS,
        num_workers: int = 0,
        prefetch_factor: int | None = None,
        persistent_workers: bool | None = None,
        pin_memory: bool | None = None,
        multiprocessing_context: Any = None,
    ) -> None:
        if decode_device is not None and decode_device not in ("auto", "cpu", "cuda"):
            raise AezipError(f"unknown decode_device {decode_device!r}; use None, auto, cpu or cuda")
        if decode_device is not None and output != "tensor":
            raise AezipError("decode_device needs output='tensor'")
        if decode_device is not None and mode is not None and mode not in DEVICE_MODES:
            raise AezipError(f"mode {mode!r} is not available with decode_device; use one of {', '.join(DEVICE_MODES)}")
        on_device = decode_device is not None
        if isinstance(sources, ShardedImageDataset):
            dataset = sources
        else:
            options = {"target": target, "output": output, "models": models, "max_batch_pixels": max_batch_pixels}
            options.update(crop=crop, pad_if_needed=pad_if_needed)
            if not on_device:
                options.update(transform=transform, mode=mode)
            dataset = ShardedImageDataset(sources, device="cpu", **options)
        self.dataset = dataset
        self.transform = transform if on_device else None
        self.mode = mode
        self.collate_fn = collate_fn or default_collate
        self.sampler = DistributedBlockSampler(
            dataset.counts, seed, shuffle, rank, world_size, uneven, block_size, window
        )
        self.stream = ArchiveStream(
            dataset,
            batch_size,
            seed=seed,
            shuffle=shuffle,
            rank=self.sampler.rank,
            world_size=self.sampler.world_size,
            uneven=uneven,
            drop_last=drop_last,
            block_size=block_size,
            window=window,
            collate_fn=collate_fn,
            latents=on_device,
            mode=mode,
        )
        self.decode_device = decode_device
        self._explicit_epoch = False
        self._decoder: DeviceDecoder | None = None
        self._decoder_args = (decode_device, sorted({str(m) for d in dataset.datasets for m in d.models}))
        self._decoder_options = (max_batch_pixels, precision)
        if pin_memory is None:
            pin_memory = on_device and torch.cuda.is_available() and decode_device != "cpu"
        if persistent_workers is None:
            persistent_workers = num_workers > 0
        self.loader = DataLoader(
            self.stream,
            batch_size=None,
            collate_fn=as_is,
            num_workers=num_workers,
            pin_memory=pin_memory,
            prefetch_factor=prefetch_factor if num_workers > 0 else None,
            persistent_workers=persistent_workers and num_workers > 0,
            multiprocessing_context=multiprocessing_context if num_workers > 0 else None,
        )

    @property
    def batch_size(self) -> int:
        return self.stream.batch_size

    @property
    def rank(self) -> int:
        return self.sampler.rank

    @property
    def world_size(self) -> int:
        return self.sampler.world_size

    @property
    def epoch(self) -> int:
        return self.sampler.epoch

    @property
    def decoder(self) -> DeviceDecoder:
        """The main-process decoder for ``decode_device`` (created on first use)."""
        if self._decoder is None:
            device, models = self._decoder_args
            max_pixels, precision = self._decoder_options
            self._decoder = DeviceDecoder(device or "cpu", models, max_pixels, precision)
        return self._decoder

    def __len__(self) -> int:
        """Batches in a whole epoch (equal on every rank)."""
        return len(self.stream.batch_sizes(self.sampler.num_samples()))

    def set_epoch(self, epoch: int) -> None:
        """Use epoch ``epoch`` (a different order per epoch); the current epoch keeps its position,
        so after ``load_state_dict`` a loop may call it with the saved epoch."""
        self.sampler.set_epoch(epoch)
        self._explicit_epoch = True

    def state_dict(self) -> dict:
        """What :meth:`load_state_dict` needs: seed, epoch, global position, samples seen (plus sizes, to check)."""
        state = self.sampler.state_dict()
        state["batch_size"] = self.batch_size
        state["total"] = self.sampler.total
        return state

    def load_state_dict(self, state: dict) -> None:
        """Continue from ``state`` (any world size): the next iteration yields the samples not yet consumed."""
        if "total" in state and int(state["total"]) != self.sampler.total:
            raise AezipError(f"loader state is for {state['total']} images, these sources have {self.sampler.total}")
        self.sampler.load_state_dict(state)

    def decode(self, batch: LatentBatch) -> Any:
        """A worker's :class:`LatentBatch` as the collated batch (main process, ``decode_device``)."""
        images = self.decoder(batch, self.mode)
        if self.transform is not None:
            images = [self.transform(im) for im in images]
        items: list[Any] = images if batch.targets is None else list(zip(images, batch.targets, strict=True))
        return self.collate_fn(items)

    def __iter__(self) -> Iterator[Any]:
        if self.sampler.complete and not self._explicit_epoch:
            self.sampler.set_epoch(self.sampler.epoch + 1)
        self._explicit_epoch = False
        self.sampler.load_state_dict(self.sampler.state_dict())
        s = self.sampler.state
        self.stream.set_position(s.seed, s.epoch, s.position)
        sizes = self.stream.batch_sizes(len(self.sampler))
        for size, batch in zip(sizes, self.loader, strict=False):
            if isinstance(batch, LatentBatch):
                batch = self.decode(batch)
            self.sampler.advance(size)
            yield batch
        self.sampler.advance(len(self.sampler))  # a partial batch left out by drop_last
