"""Archives as Hugging Face ``datasets`` iterables (optional extra: ``pip install aezip[hf]``).

:func:`hf_iterable` builds a ``datasets.IterableDataset`` with ``IterableDataset.from_generator``
(no loading script). The archives' items are cut into spans, passed as a list in ``gen_kwargs``,
so ``datasets`` shards them over DataLoader workers and, with
``datasets.distributed.split_dataset_by_node``, over ranks; each span is read sequentially and
decoded ``chunk`` images at a time.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from aezip.archive.reader import Archive
from aezip.errors import AezipError
from aezip.loader.dataset import DEFAULT_CHUNK, ImageArchiveDataset, is_dataset_image

PathLike = str | os.PathLike[str]


def archive_spans(paths: Sequence[PathLike], num_shards: int | None = None) -> list[tuple[str, int, int]]:
    """(archive, first item, end) spans covering the images of ``paths``, at least ``num_shards`` of
    them when there are that many images (default: one per archive)."""
    counts = []
    for path in paths:
        with Archive(path) as archive:
            counts.append(sum(is_dataset_image(m) for m in archive.members))
    total = sum(counts)
    wanted = max(num_shards or len(paths), 1)
    spans: list[tuple[str, int, int]] = []
    for path, count in zip(paths, counts, strict=True):
        if count == 0:
            continue
        pieces = max(1, min(count, round(wanted * count / max(total, 1))))
        spans += [(str(path), count * k // pieces, count * (k + 1) // pieces) for k in range(pieces)]
    return spans


def generate_examples(
    spans: list[tuple[str, int, int]], mode: str | None, chunk: int, models: tuple[str, ...]
) -> Iterator[dict[str, Any]]:
    """The ``from_generator`` generator: one example per image of each span, in archive order."""
    for path, start, stop in spans:
        dataset = ImageArchiveDataset(path, output="pil", mode=mode, device="cpu", models=list(models))
        names = dataset.names
        for i, image in zip(range(start, stop), dataset.iter_images(start, stop, chunk), strict=True):
            yield {"image": image, "name": names[i], "archive": path}


def hf_iterable(
    sources: PathLike | Sequence[PathLike],
    num_shards: int | None = None,
    mode: str | None = "RGB",
    chunk: int = DEFAULT_CHUNK,
    models: Sequence[PathLike] | None = None,
) -> Any:
    """A ``datasets.IterableDataset`` of ``{"image", "name", "archive"}`` examples from archives.

    ``num_shards`` sets how many spans the items are cut into (the most workers or ranks that can
    share the work); ``mode`` converts every image (``None`` keeps each image's own mode).
    """
    try:
        import datasets
    except ImportError:
        raise AezipError("Hugging Face datasets is not installed (pip install 'aezip[hf]')") from None
    paths = [sources] if isinstance(sources, (str, os.PathLike)) else list(sources)
    spans = archive_spans(paths, num_shards)
    if not spans:
        raise AezipError("the archives hold no images")
    features = datasets.Features(
        {"image": datasets.Image(), "name": datasets.Value("string"), "archive": datasets.Value("string")}
    )
    return datasets.IterableDataset.from_generator(
        generate_examples,
        features=features,
        gen_kwargs={"spans": spans, "mode": mode, "chunk": chunk, "models": tuple(str(Path(m)) for m in models or ())},
    )
