"""Distributed training straight from aezip archives: a minimal, complete DDP loop.

Run on the CPU with two processes (gloo), e.g. on the sample photos::

    aezip pack examples/photos /tmp/photos.aez
    torchrun --standalone --nproc_per_node 2 examples/train_ddp.py /tmp/photos.aez --epochs 2

Every rank gets the same number of batches (no hang at the end of an epoch), the order is a
function of (seed, epoch) only, and ``--checkpoint`` saves the model, the optimizer and the
loader's position after every ``--save-every`` steps, so a restarted run (``--resume``, with any
number of processes) continues mid-epoch with exactly the samples not seen yet. On GPUs, use
``--backend nccl --decode-device cuda`` (workers entropy-decode, the GPU synthesises).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from aezip.loader.archive_loader import ArchiveLoader


class RandomCrop:
    """A random ``size`` x ``size`` crop of a (C, H, W) tensor, edge-padded when smaller."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        h, w = image.shape[-2:]
        if h < self.size or w < self.size:
            pad = (0, max(self.size - w, 0), 0, max(self.size - h, 0))
            image = nn.functional.pad(image.unsqueeze(0), pad, mode="replicate").squeeze(0)
            h, w = image.shape[-2:]
        top = int(torch.randint(h - self.size + 1, ()))
        left = int(torch.randint(w - self.size + 1, ()))
        return image[..., top : top + self.size, left : left + self.size]


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("archives", nargs="+", type=Path, help="one archive, or several shards")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=8, help="per rank")
    p.add_argument("--crop", type=int, default=64)
    p.add_argument("--workers", type=int, default=1, help="DataLoader workers per rank")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backend", default="gloo")
    p.add_argument("--decode-device", choices=["cpu", "cuda"], help="synthesise in the main process on this device")
    p.add_argument("--checkpoint", type=Path, help="where to save model, optimizer and loader state")
    p.add_argument("--save-every", type=int, default=2, help="steps between checkpoints")
    p.add_argument("--resume", action="store_true", help="continue from --checkpoint")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    dist.init_process_group(args.backend)
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(args.seed)
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if args.backend == "nccl" else "cpu"
    crop = RandomCrop(args.crop)
    loader = ArchiveLoader(
        args.archives,
        batch_size=args.batch_size,
        seed=args.seed,
        mode="RGB",
        transform=crop,
        num_workers=args.workers,
        decode_device=args.decode_device,
    )  # rank and world size come from torchrun's RANK / WORLD_SIZE
    model = nn.Sequential(  # a tiny denoising autoencoder, just to have gradients to all-reduce
        nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(), nn.ConvTranspose2d(8, 3, 4, stride=2, padding=1)
    ).to(device)
    ddp = DistributedDataParallel(model)
    optimizer = torch.optim.Adam(ddp.parameters(), lr=1e-3)
    start_epoch, step = 0, 0
    if args.resume and args.checkpoint and args.checkpoint.exists():
        ckpt = torch.load(args.checkpoint, map_location="cpu")
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        loader.load_state_dict(ckpt["loader"])  # saved with any world size
        start_epoch, step = ckpt["loader"]["epoch"], ckpt["step"]
    for epoch in range(start_epoch, args.epochs):
        loader.set_epoch(epoch)  # a resumed epoch keeps its position
        samples, total = 0, torch.zeros(2, device=device)
        for images in loader:
            images = images.to(device, non_blocking=True)
            noisy = images + 0.05 * torch.randn_like(images)
            loss = nn.functional.mse_loss(ddp(noisy), images)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            samples += images.shape[0]
            step += 1
            total += torch.stack([loss.detach() * images.shape[0], torch.tensor(float(images.shape[0]), device=device)])
            if args.checkpoint and step % args.save_every == 0 and rank == 0:
                state = {"model": model.state_dict(), "optimizer": optimizer.state_dict()}
                torch.save({**state, "loader": loader.state_dict(), "step": step}, args.checkpoint)
        dist.all_reduce(total)
        mean = (total[0] / total[1].clamp(min=1)).item()
        print(f"rank {rank}/{world} epoch {epoch} samples {samples} loss {mean:.5f}", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
