"""Train augmentation and eval transform for decoded uint8 images; both finish on whole batches.

The decoded cache holds each image as uint8 ``3×H×W`` with its short side at
``resize_size(image_size)`` (S). Per image, a loader worker only slices: a random S×S square (and a
flip) for training, the central ``image_size`` square for evaluation (which equals "resize to S,
center-crop": the resize happened once, in the cache). The expensive parts run once per batch in the
training process as a few tensor operations: colour jitter (brightness, contrast, saturation) and one
affine warp per image that does the random-resized-crop's scale, aspect and position together with
the rotation. On this 2-core CPU torchvision's per-image ColorJitter and RandomRotation cost 30 ms
per 224-px image in a worker; the batched form costs well under 1 ms per image.

Randomness comes from generators seeded by (seed, epoch, step or index), never the global RNG, so a
resumed run and every DDP rank draw exactly what an uninterrupted single-process run would.
"""
from __future__ import annotations

import math

import torch
from torch.nn import functional as F

from .config import TrainConfig
from .images import center_offsets


def _center_square(img: torch.Tensor, side: int, top: int | None = None, left: int | None = None) -> torch.Tensor:
    _, h, w = img.shape
    center_top, center_left = center_offsets(h, w, side)
    top = center_top if top is None else top
    left = center_left if left is None else left
    return img[:, top:top + side, left:left + side]


class TrainCrop:
    """Per image (in a worker): a random square of the short side along the long side, maybe flipped."""

    def __init__(self, hflip: float) -> None:
        self.hflip = hflip

    def __call__(self, img: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        _, h, w = img.shape
        side = min(h, w)
        offset = int(torch.randint(0, max(h, w) - side + 1, (1,), generator=generator))
        out = _center_square(img, side, offset if h > w else 0, offset if w > h else 0)
        if self.hflip and float(torch.rand(1, generator=generator)) < self.hflip:
            out = out.flip(-1)
        return out.contiguous()


class EvalCrop:
    """Per image: the central ``image_size`` square of an image whose short side is already S; with the
    cache's ``decode_resized`` this is ``apps.ml.images.decode_eval_crop``, pixel for pixel."""

    def __init__(self, image_size: int) -> None:
        self.image_size = image_size

    def __call__(self, img: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return _center_square(img, self.image_size).contiguous()


class BatchNormalizer:
    """uint8 batch → float on the device, normalised with the architecture's mean and std."""

    def __init__(self, mean, std, *, device: torch.device, channels_last: bool = False) -> None:
        self.mean = torch.tensor(mean, device=device).view(1, -1, 1, 1)
        self.std = torch.tensor(std, device=device).view(1, -1, 1, 1)
        self.device = device
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def to_unit(self, batch: torch.Tensor) -> torch.Tensor:
        return batch.to(self.device, non_blocking=True).float().div_(255.0)

    def finish(self, x: torch.Tensor) -> torch.Tensor:
        return ((x - self.mean) / self.std).contiguous(memory_format=self.memory_format)

    def __call__(self, batch: torch.Tensor, step: int = 0) -> torch.Tensor:
        return self.finish(self.to_unit(batch))


class BatchAugment(BatchNormalizer):
    """Colour jitter and a random-resized-crop-plus-rotation warp for a batch of S×S uint8 squares."""

    def __init__(self, config: TrainConfig, image_size: int, mean, std, *, device: torch.device,
                 channels_last: bool = False, rank: int = 0, world_size: int = 1) -> None:
        super().__init__(mean, std, device=device, channels_last=channels_last)
        self.image_size = image_size
        self.scale_min = config.scale_min
        self.rotation = math.radians(config.rotation)
        self.jitter = config.color_jitter
        self.seed = config.seed
        self.rank, self.world_size = rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _generator(self, step: int) -> torch.Generator:
        from .data import item_seed

        return torch.Generator().manual_seed(item_seed(self.seed, self.epoch, 1_000_000 + step * self.world_size + self.rank))

    def _jitter(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        b = x.shape[0]

        def factor() -> torch.Tensor:
            return (1 + (torch.rand(b, 1, 1, 1, generator=g) * 2 - 1) * self.jitter).to(x.device)

        x = x * factor()  # brightness
        grey_mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - grey_mean) * factor() + grey_mean  # contrast
        grey = (0.299 * x[:, :1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])
        x = (x - grey) * factor() + grey  # saturation
        return x.clamp_(0, 1)

    def _warp(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        b = x.shape[0]
        area = self.scale_min + torch.rand(b, generator=g) * (1 - self.scale_min)
        log_ratio = (torch.rand(b, generator=g) * 2 - 1) * math.log(4 / 3)
        ratio = torch.exp(log_ratio)
        w = torch.sqrt(area * ratio).clamp(max=1.0)
        h = torch.sqrt(area / ratio).clamp(max=1.0)
        tx = (torch.rand(b, generator=g) * 2 - 1) * (1 - w)
        ty = (torch.rand(b, generator=g) * 2 - 1) * (1 - h)
        angle = (torch.rand(b, generator=g) * 2 - 1) * self.rotation
        cos, sin = torch.cos(angle), torch.sin(angle)
        theta = torch.stack([torch.stack([cos * w, -sin * h, tx], 1), torch.stack([sin * w, cos * h, ty], 1)], 1)
        grid = F.affine_grid(theta.to(x.device), [b, x.shape[1], self.image_size, self.image_size], align_corners=False)
        # Outside the source after a rotation: zeros of the normalised image, i.e. the mean colour.
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    def __call__(self, batch: torch.Tensor, step: int = 0) -> torch.Tensor:
        g = self._generator(step)
        x = self.to_unit(batch)
        if self.jitter:
            x = self._jitter(x, g)
        x = (x - self.mean) / self.std
        return self._warp(x, g).contiguous(memory_format=self.memory_format)
