"""Train = serve, pixel for pixel: the tensors training validates and tests on are the tensors
``evaluate`` and ``/predict`` feed the model, for every kind of input.

Training: ``build_cache`` (decode + short side to S) → ``EvalCrop`` → ``BatchNormalizer``, as
``apps.ml.engine.fit`` builds its val and test loaders. Serving: ``Predictor.decode`` and
``Predictor.preprocess``, which ``/predict``, ``/predict_batch`` and the evaluation app call.
"""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from apps.ml.architectures import architectures
from apps.ml.data import CachedImageDataset, Sample, build_cache
from apps.ml.images import decode_eval_crop, resize_size
from apps.ml.runtime import Predictor
from apps.ml.transforms import BatchNormalizer, EvalCrop
from tests.conftest import make_image_bytes


def _pixel_art(size: tuple[int, int], *, seed: int = 0, transparent: bool = True) -> Image.Image:
    """A sprite: hard-edged blocks of a few colours on a transparent background, like the Pokémon set."""
    rng = np.random.default_rng(seed)
    w, h = size
    block = 4
    small = rng.integers(0, 6, size=(h // block + 1, w // block + 1))
    palette = rng.integers(0, 256, size=(6, 4)).astype(np.uint8)
    palette[:, 3] = 255
    palette[0, 3] = 0 if transparent else 255  # colour 0 is the background
    pixels = palette[np.kron(small, np.ones((block, block), dtype=int))[:h, :w]]
    return Image.fromarray(pixels, "RGBA")


def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    out = io.BytesIO()
    img.save(out, format=fmt, **kw)
    return out.getvalue()


def _animated_gif() -> bytes:
    frames = [_pixel_art((60, 60), seed=s).convert("RGB").convert("P", palette=Image.Palette.ADAPTIVE) for s in (1, 2)]
    return _encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def _exif_rotated_jpeg() -> bytes:
    img = Image.open(io.BytesIO(make_image_bytes(11, size=(120, 80), fmt="PNG"))).convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise when shown
    return _encode(img, "JPEG", quality=92, exif=exif.tobytes())


IMAGE_SIZE = 64  # S = 73
CASES = {
    "smaller than S, upscaled (PNG sprite with alpha)": lambda: _encode(_pixel_art((40, 40)), "PNG"),
    "72 px sprite at 96 px input (upscaled)": lambda: _encode(_pixel_art((72, 72), seed=3), "PNG"),
    "exactly S": lambda: make_image_bytes(1, size=(resize_size(IMAGE_SIZE),) * 2, fmt="PNG"),
    "larger, square": lambda: make_image_bytes(2, size=(300, 300), fmt="PNG"),
    "non-square, wide": lambda: make_image_bytes(3, size=(211, 90), fmt="PNG"),
    "non-square, tall": lambda: make_image_bytes(4, size=(90, 211), fmt="PNG"),
    "odd sides, upscaled": lambda: make_image_bytes(5, size=(51, 37), fmt="PNG"),
    "JPEG decoded with draft": lambda: make_image_bytes(6, size=(800, 601), fmt="JPEG", quality=90),
    "JPEG, wide, draft": lambda: make_image_bytes(7, size=(1200, 500), fmt="JPEG", quality=85),
    "palette PNG with transparency": lambda: _encode(_pixel_art((64, 48), seed=8).convert("P"), "PNG"),
    "animated GIF (first frame)": _animated_gif,
    "EXIF-rotated JPEG": _exif_rotated_jpeg,
    "WebP": lambda: make_image_bytes(9, size=(150, 100), fmt="WEBP"),
}


def _training_crop(data: bytes, image_size: int) -> torch.Tensor:
    """What fit's val/test loader yields for this file: the decoded cache, then EvalCrop."""
    images = build_cache([Sample(key="case", label=0, read=lambda: data)], resize_size(image_size))
    return CachedImageDataset(images, [0], EvalCrop(image_size))[0][0]


def _predictor(image_size: int) -> Predictor:
    arch = architectures.get("simple")
    torch.manual_seed(0)
    return Predictor(model=arch.build(2), labels=["a", "b"], input_size=image_size,
                     normalization=arch.normalization, backend="torch")


@pytest.mark.parametrize("case", list(CASES))
def test_training_and_serving_feed_the_model_identical_tensors(case):
    image_size = 96 if "96 px" in case else IMAGE_SIZE
    data = CASES[case]()
    predictor = _predictor(image_size)

    trained_on = _training_crop(data, image_size)
    served = np.asarray(predictor.decode(data), dtype=np.uint8).transpose(2, 0, 1)
    assert trained_on.shape == (3, image_size, image_size) == served.shape
    # Before normalisation: at most 1/255 apart (in fact the same pixels).
    assert int(np.abs(trained_on.numpy().astype(int) - served.astype(int)).max()) <= 1

    # After normalisation, as each side hands it to the model.
    arch = architectures.get("simple")
    train_input = BatchNormalizer(arch.mean, arch.std, device=torch.device("cpu"))(trained_on.unsqueeze(0))
    serve_input = predictor.preprocess([data])
    assert np.abs(train_input.numpy() - serve_input).max() <= (1 / 255) / min(arch.std) + 1e-5


def test_the_geometry_is_resize_short_side_then_an_integer_center_crop():
    """A fractional source box resampled straight to the input (the old serving path) is not the same
    picture for upscaled sprites; the shared function must be the two-step geometry."""
    size, sprite = 64, 40  # S = 73: the crop's offset, 4.5 px in a fractional box, is 4 px in whole pixels
    data = _encode(_pixel_art((sprite, sprite), seed=3), "PNG")
    crop = np.asarray(decode_eval_crop(data, image_size=size, max_pixels=10**7))
    rgba = Image.open(io.BytesIO(data)).convert("RGBA")
    flat = Image.new("RGB", rgba.size, (255, 255, 255))
    flat.paste(rgba, mask=rgba.getchannel("A"))
    short = resize_size(size)
    resized = np.asarray(flat.resize((short, short), Image.Resampling.BILINEAR))
    offset = (short - size) // 2
    assert np.array_equal(crop, resized[offset:offset + size, offset:offset + size])
    scale = short / sprite
    left = (short - size) / 2 / scale
    one_resample = np.asarray(flat.resize((size, size), Image.Resampling.BILINEAR,
                                          box=(left, left, left + size / scale, left + size / scale)))
    assert np.abs(one_resample.astype(int) - crop.astype(int)).mean() > 5  # why the shortcut is not allowed
