"""Datasets for training: a manifest of samples, decoded once into a uint8 cache. No Django.

Decoding and resizing a JPEG costs more than a training step at 128 px, so each image is decoded
once (with Pillow's DCT-domain ``draft`` scaling for JPEG), resized so its short side is
``resize_size(image_size)``, and kept as a uint8 tensor (about 200 KiB at 224 px). The cache can be
written to disk, keyed by the samples and the size, so a resumed or repeated job does not decode again.

Per-image randomness is seeded per (seed, epoch, index), so a batch is the same whichever process or
worker makes it, and a resumed run sees exactly the images an uninterrupted one would have seen.
"""
from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from .images import decode_resized

logger = logging.getLogger(__name__)


class DataError(RuntimeError):
    pass


@dataclass(frozen=True)
class Sample:
    key: str  # stable identity of the image (sha256 or path): names it in errors and keys the cache
    label: int
    read: Callable[[], bytes]  # returns the encoded bytes


# Training reads images already accepted at ingest: no pixel limit beyond Pillow's own sanity.
_MAX_PIXELS = 500_000_000


def decode_to_tensor(data: bytes, short_side: int) -> torch.Tensor:
    """Encoded bytes → uint8 ``3×H×W`` with ``min(H, W) == short_side`` (up- or down-scaled).

    Exactly ``apps.ml.images.decode_resized``, the first half of the serving path's eval geometry.
    """
    img = decode_resized(data, short_side=short_side, max_pixels=_MAX_PIXELS)
    return torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1).contiguous()


def cache_key(samples: Sequence[Sample], short_side: int) -> str:
    digest = hashlib.sha256(f"kyara-cache/2:{short_side}".encode())
    for sample in samples:
        digest.update(f"\n{sample.key}".encode())
    return digest.hexdigest()[:32]


def build_cache(
    samples: Sequence[Sample], short_side: int, *, cache_dir: Path | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> list[torch.Tensor]:
    """Decode every sample once; reuse ``cache_dir/<key>.pt`` when an earlier run wrote it."""
    path = Path(cache_dir) / f"{cache_key(samples, short_side)}.pt" if cache_dir else None
    if path and path.is_file():
        try:
            images = torch.load(path, map_location="cpu", weights_only=True)
            if isinstance(images, list) and len(images) == len(samples):
                return images
        except Exception as exc:  # noqa: BLE001 - a bad cache file is rebuilt, never fatal
            logger.warning("Decoded cache %s is unreadable (%s); decoding again", path, exc)
    images = []
    for index, sample in enumerate(samples):
        if should_stop and index % 32 == 0 and should_stop():
            raise InterruptedError("stopped while decoding images")
        try:
            images.append(decode_to_tensor(sample.read(), short_side))
        except Exception as exc:  # noqa: BLE001
            raise DataError(f"Image {sample.key} could not be read or decoded: {type(exc).__name__}: {exc}") from exc
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        torch.save(images, tmp)
        tmp.replace(path)
    return images


def item_seed(seed: int, epoch: int, index: int) -> int:
    return (seed * 1_000_003 + epoch * 100_003 + index * 7_919 + 17) % (2**63 - 1)


class CachedImageDataset(Dataset):
    """Indexed by ``(index, epoch)`` pairs from ``EpochSampler``; returns ``(uint8 image, label)``.

    ``transform(image, generator)`` gets a generator seeded by (seed, epoch, index).
    """

    def __init__(self, images: list[torch.Tensor], labels: Sequence[int], transform, *, seed: int = 0) -> None:
        if len(images) != len(labels):
            raise ValueError("one label per image")
        self.images = images
        self.labels = list(labels)
        self.transform = transform
        self.seed = seed

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key):
        index, epoch = key if isinstance(key, tuple) else (key, 0)
        generator = torch.Generator().manual_seed(item_seed(self.seed, epoch, index))
        return self.transform(self.images[index], generator), self.labels[index]


class EpochSampler(Sampler):
    """Yields ``(index, epoch)``; shuffled by (seed, epoch), sharded over DDP ranks.

    ``pad``: training pads so every rank runs the same number of steps (DDP needs that); evaluation
    does not pad, so each image is counted exactly once over all ranks.
    """

    def __init__(self, size: int, *, shuffle: bool, seed: int = 0, rank: int = 0, world_size: int = 1,
                 pad: bool = True) -> None:
        self.size, self.shuffle, self.seed = size, shuffle, seed
        self.rank, self.world_size, self.pad = rank, world_size, pad
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _indices(self) -> list[int]:
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 7_907 + self.epoch)
            order = torch.randperm(self.size, generator=generator).tolist()
        else:
            order = list(range(self.size))
        if self.pad and self.world_size > 1 and order:
            total = -(-self.size // self.world_size) * self.world_size
            order += order[: total - self.size]
        return order[self.rank::self.world_size]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter([(index, self.epoch) for index in self._indices()])

    def __len__(self) -> int:
        return len(self._indices())


def _worker_init(_worker_id: int) -> None:
    # The worker only crops and flips small uint8 tensors: one thread, so it never fights the model.
    torch.set_num_threads(1)


def make_loader(dataset: Dataset, sampler: EpochSampler, *, batch_size: int, workers: int,
                drop_last: bool = False) -> DataLoader:
    return DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, num_workers=workers, drop_last=drop_last,
        persistent_workers=workers > 0, worker_init_fn=_worker_init if workers else None,
        prefetch_factor=4 if workers else None,
    )
