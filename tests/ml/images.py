"""Learnable generated images: one colour and shape family per class (shared by ML and training tests)."""
from __future__ import annotations

import io
import random

from apps.ml.data import Sample

PALETTE = [(220, 40, 40), (40, 180, 60), (40, 70, 220), (230, 200, 30), (180, 60, 200), (30, 200, 200)]


def class_image_bytes(label: int, seed: int, *, size: int = 40, fmt: str = "PNG") -> bytes:
    """A picture whose class shows in its dominant colour and shape, varied by position and clutter."""
    from PIL import Image, ImageDraw

    rng = random.Random(f"{label}:{seed}")
    img = Image.new("RGB", (size, size), tuple(rng.randrange(200, 256) for _ in range(3)))
    draw = ImageDraw.Draw(img)
    for _ in range(3):  # clutter shared by every class
        x, y = rng.randrange(size), rng.randrange(size)
        draw.line([x, y, rng.randrange(size), rng.randrange(size)], fill=tuple(rng.randrange(256) for _ in range(3)))
    color = tuple(max(0, min(255, c + rng.randrange(-25, 26))) for c in PALETTE[label % len(PALETTE)])
    w = rng.randrange(size // 2, size - 4)
    x0, y0 = rng.randrange(0, size - w), rng.randrange(0, size - w)
    box = [x0, y0, x0 + w, y0 + w]
    (draw.ellipse if label % 2 else draw.rectangle)(box, fill=color, outline=(0, 0, 0))
    out = io.BytesIO()
    img.save(out, format=fmt)
    return out.getvalue()


def make_samples(num_classes: int, per_class: int, *, offset: int = 0, size: int = 40) -> list[Sample]:
    samples = []
    for label in range(num_classes):
        for i in range(per_class):
            data = class_image_bytes(label, offset + i, size=size)
            samples.append(Sample(key=f"c{label}-{offset + i}", label=label, read=lambda d=data: d))
    return samples
