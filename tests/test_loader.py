"""ArchiveLoader over sharded archives: ranks x workers, epochs, mid-epoch resume, device decode path."""

from __future__ import annotations

import itertools
import os
import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from aezip.archive.pack import pack
from aezip.codec.codec import Codec
from aezip.errors import AezipError
from aezip.loader.archive_loader import ArchiveLoader, ArchiveStream, ShardedImageDataset, convert_mode
from aezip.model.registry import shipped_models
from tests.conftest import photo_like

COUNTS = [5, 7, 4]
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three small archives standing in for the shards of a manifest (16 images, 16x16)."""
    root = tmp_path_factory.mktemp("shards")
    small = next(m for m in shipped_models() if m.name == "v1-cpu-64x96")  # the small shipped model: fast tests
    codec = Codec(quality=1, device="cpu", model=small.path)
    paths = []
    for k, count in enumerate(COUNTS):
        src = root / f"src{k}"
        src.mkdir()
        for i in range(count):
            pixels = photo_like(16, 16, seed=100 * k + i)
            if k == 1 and i == 1:
                Image.fromarray(pixels[..., 0]).save(src / f"{i:02d}.png")  # grayscale
            elif k == 1 and i == 2:
                alpha = np.full((16, 16, 1), 200, np.uint8)
                Image.fromarray(np.concatenate([pixels, alpha], -1), "RGBA").save(src / f"{i:02d}.png")
            elif k == 1 and i == 3:
                Image.fromarray(pixels).quantize(8).save(src / f"{i:02d}.png")  # stored losslessly
            else:
                Image.fromarray(pixels).save(src / f"{i:02d}.png")
        (src / "labels.txt").write_text("not an image\n")
        paths.append(root / f"shard{k}.aez")
        pack(src, paths[-1], codec)
    return paths


def key(name: str, dataset: object) -> str:
    """target=: the shard and member name of an item."""
    return f"{Path(dataset.archive.path).stem}/{name}"  # type: ignore[attr-defined]


ALL_KEYS = [f"shard{k}/{i:02d}.png" for k, n in enumerate(COUNTS) for i in range(n)]


def run(loader: ArchiveLoader, batches: int | None = None) -> list[str]:
    """Keys yielded by a loader, in order (all, or the first ``batches`` batches)."""
    keys: list[str] = []
    for images, names in itertools.islice(loader, batches):
        assert images.shape[1:] == (3, 16, 16)
        keys += names
    return keys


@pytest.fixture(scope="module")
def data(shards: list[Path]) -> ShardedImageDataset:
    """The shards opened once, so in-process loaders share one decoder."""
    return ShardedImageDataset(shards, target=key, mode="RGB", device="cpu")


def make(
    sources: list[Path] | ShardedImageDataset, rank: int, world: int = 2, workers: int = 0, **kw: object
) -> ArchiveLoader:
    options = {"batch_size": 3, "seed": 5, "block_size": 2, "window": 8, **kw}
    if not isinstance(sources, ShardedImageDataset):
        options.update(target=key, mode="RGB")
    return ArchiveLoader(sources, rank=rank, world_size=world, num_workers=workers, **options)  # type: ignore[arg-type]


def test_two_ranks_two_workers_epochs_and_resume(shards: list[Path], data: ShardedImageDataset) -> None:
    loaders = [make(shards, rank, workers=2) for rank in range(2)]
    assert [len(ld) for ld in loaders] == [3, 3]  # 8 samples per rank in batches of 3
    epoch0 = [run(ld) for ld in loaders]
    assert [len(k) for k in epoch0] == [8, 8]
    assert Counter(epoch0[0] + epoch0[1]) == Counter(ALL_KEYS)  # every sample exactly once
    assert epoch0[0] == run(make(shards, 0, workers=1))  # the same order for 1 or 3 workers
    assert epoch0[1] == run(make(shards, 1, workers=3))

    epoch1 = [run(ld) for ld in loaders]  # iterating again: the next epoch, persistent workers
    assert [ld.epoch for ld in loaders] == [1, 1]
    assert Counter(epoch1[0] + epoch1[1]) == Counter(ALL_KEYS)
    assert epoch1 != epoch0

    for ld in loaders:
        ld.set_epoch(2)
    first = [run(ld, batches=1) for ld in loaders]  # one batch each, then "preemption"
    states = [ld.state_dict() for ld in loaders]
    assert states[0] == states[1]
    assert states[0]["position"] == 6 and states[0]["epoch"] == 2 and states[0]["samples_seen"] == 3
    full = [[ALL_KEYS[i] for i in ld.stream.indices(5, 2, 0)] for ld in loaders]  # the whole epoch 2
    assert [f[:3] for f in full] == first
    for rank, workers in ((0, 2), (1, 0)):  # same world size: exactly the rest of each rank's epoch
        resumed = make(shards if workers else data, rank, workers=workers)
        resumed.load_state_dict(states[rank])
        resumed.set_epoch(2)  # a resumed loop calls this too: the position is kept
        assert first[rank] + run(resumed) == full[rank]
        assert run(resumed) != []  # then the next epoch
    resumed = make(data, 0, world=1)  # world size 2 -> 1: the remaining samples, once each
    resumed.load_state_dict(states[0])
    rest = run(resumed)
    assert Counter(rest + first[0] + first[1]) == Counter(ALL_KEYS)
    assert resumed.state_dict()["position"] == 16


def test_uneven_counts_wrap_or_drop(data: ShardedImageDataset) -> None:
    wrap = [run(make(data, r, world=3)) for r in range(3)]
    assert [len(w) for w in wrap] == [6, 6, 6]  # 16 samples: two repeated so every rank has 6
    assert set(sum(wrap, [])) == set(ALL_KEYS)
    drop = [run(make(data, r, world=3, uneven="drop", drop_last=True)) for r in range(3)]
    assert [len(d) for d in drop] == [3, 3, 3]  # 5 each, and the partial batch of 2 dropped
    loader = make(data, 0, world=3, uneven="drop", drop_last=True)
    assert len(loader) == 1
    run(loader)
    assert loader.state_dict()["position"] == 16  # the epoch counts as complete
    with pytest.raises(AezipError):
        make(data, 0, uneven="pad")


def list_collate(items: list) -> tuple[torch.Tensor, list[str]]:
    return torch.stack([im for im, _ in items]), [name for _, name in items]


def test_device_decode_path_equals_worker_decode(shards: list[Path], data: ShardedImageDataset) -> None:
    plain = ShardedImageDataset(shards, target=key, device="cpu")
    expected = {name: image for image, name in plain.get_batch(range(len(plain)))}
    assert {t.shape[0] for t in expected.values()} == {1, 3, 4}  # gray, RGB, RGBA among them
    loader = ArchiveLoader(
        shards, batch_size=4, seed=1, target=key, collate_fn=list, decode_device="cpu", num_workers=2
    )
    got = {name: image for batch in loader for image, name in batch}
    assert got.keys() == expected.keys()
    for name, image in got.items():
        assert image.shape == expected[name].shape and image.dtype == torch.float32
        assert torch.allclose(image, expected[name], atol=1e-6), name
    rgb = torch.stack([expected[k] for k in ALL_KEYS[:5]])
    flip = ArchiveLoader(data, batch_size=5, shuffle=False, transform=lambda t: t.flip(-1), decode_device="cpu")
    assert torch.allclose(next(iter(flip))[0], rgb.flip(-1), atol=1e-6)  # shard 0: five RGB images, in order
    gray = ArchiveLoader(data, batch_size=16, mode="L", decode_device="cpu", shuffle=False, collate_fn=list)
    for (image, name), k in zip(next(iter(gray)), ALL_KEYS, strict=True):
        assert name == k and image.shape[0] == 1


def test_convert_mode_matches_pillow() -> None:
    rng = np.random.default_rng(0)
    for source, channels in (("L", 1), ("LA", 2), ("RGB", 3), ("RGBA", 4)):
        pixels = rng.integers(0, 256, (5, 7, channels), dtype=np.uint8)
        image = Image.fromarray(pixels[..., 0] if channels == 1 else pixels, source)
        tensor = torch.from_numpy(pixels).permute(2, 0, 1)
        for target in ("L", "LA", "RGB", "RGBA"):
            want = np.asarray(image.convert(target))
            got = convert_mode(tensor, source, target).permute(1, 2, 0).numpy()
            assert np.array_equal(got.squeeze(-1) if want.ndim == 2 else got, want), (source, target)
    with pytest.raises(AezipError):
        convert_mode(tensor, "RGB", "CMYK")


def test_sharded_dataset_and_options(shards: list[Path]) -> None:
    data = ShardedImageDataset(shards, device="cpu")
    assert data.counts == COUNTS and len(data) == 16
    assert data.locate(5) == (1, 0) and data.locate(-1) == (2, 3)
    assert data.name(6) == (str(shards[1]), "01.png")
    assert torch.equal(data[6], data.datasets[1][1])
    with pytest.raises(IndexError):
        data.locate(16)
    with pytest.raises(AezipError):
        ArchiveLoader(shards, batch_size=2, decode_device="tpu")
    with pytest.raises(AezipError):
        ArchiveLoader(shards, batch_size=2, decode_device="cpu", output="pil")
    loader = ArchiveLoader(shards[:2], batch_size=2)
    with pytest.raises(AezipError):
        loader.load_state_dict({"seed": 0, "epoch": 0, "position": 0, "total": 16})


def test_stateful_dataloader_resumes_exactly(data: ShardedImageDataset) -> None:
    sdl = pytest.importorskip("torchdata.stateful_dataloader")

    def loader() -> object:
        stream = ArchiveStream(data, 2, seed=3, rank=0, world_size=1, block_size=2)
        return sdl.StatefulDataLoader(stream, batch_size=None, num_workers=2)

    full = [names for _, names in loader()]  # type: ignore[attr-defined]
    first = loader()
    it = iter(first)  # type: ignore[call-overload]
    head = [next(it)[1] for _ in range(3)]
    state = first.state_dict()  # type: ignore[attr-defined]
    second = loader()
    second.load_state_dict(state)  # type: ignore[attr-defined]
    assert head + [names for _, names in second] == full  # type: ignore[attr-defined]
    assert sorted(sum(full, [])) == sorted(ALL_KEYS)


@pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun not on PATH")
def test_torchrun_example_trains_on_two_ranks(shards: list[Path], tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = ["torchrun", "--standalone", "--nproc_per_node", "2", str(REPO / "examples/train_ddp.py")]
    cmd += ["--epochs", "2", "--batch-size", "2", "--crop", "16", "--workers", "0"]
    cmd += ["--checkpoint", str(tmp_path / "ckpt.pt")]
    cmd += [str(p) for p in shards]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = re.findall(r"rank (\d)/2 epoch (\d) samples (\d+)", done.stdout)
    assert sorted(lines) == [("0", "0", "8"), ("0", "1", "8"), ("1", "0", "8"), ("1", "1", "8")], done.stdout
    assert (tmp_path / "ckpt.pt").exists()
