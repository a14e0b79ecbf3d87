"""Validating and decoding image bytes with Pillow, and the eval geometry: one implementation for ingest,
training, evaluation and serving.

No Django and no torch: limits come in as arguments. Every refusal is an ``ImageRejected`` with a stable reason
code (``empty``, ``not_an_image``, ``unsupported_format``, ``too_many_pixels``, ``too_small``,
``truncated``, ``corrupt``) and a message a person can act on.
"""
from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

# Pillow format name → the extension a stored file gets.
ALLOWED_FORMATS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif", "BMP": "bmp", "MPO": "jpg"}
ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is refused, never half-used
# Our own limit (``max_pixels``) is checked from the header with a message that names the numbers;
# Pillow's global guard would fire first at open() with a vaguer one.
Image.MAX_IMAGE_PIXELS = None

DECODE_ERRORS = (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning, OSError,
                 SyntaxError, ValueError, EOFError, IndexError)


class ImageRejected(Exception):
    """A file that cannot be used; ``reason`` is a stable code, ``message`` says what to do."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass
class DecodedImage:
    rgb: Image.Image  # oriented, RGB, first frame
    format: str  # Pillow's format name, e.g. "JPEG"; the content decides it, never a file name
    extension: str
    width: int  # of the oriented image at full resolution (even when decoded with draft)
    height: int


def to_rgb(img: Image.Image) -> Image.Image:
    """Any mode to RGB: transparency over white, 16/32-bit greyscale stretched over its own range."""
    if img.mode == "RGB":
        return img
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        flat = Image.new("RGB", img.size, (255, 255, 255))
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat
    if img.mode.startswith("I") or img.mode == "F":
        values = np.asarray(img, dtype=np.float32)
        span = float(values.max() - values.min()) or 1.0
        img = Image.fromarray(((values - values.min()) * (255.0 / span)).astype(np.uint8), mode="L")
    return img.convert("RGB")


def _decode_error(exc: Exception, max_pixels: int) -> ImageRejected:
    """What Pillow's exception means for the person who sent the file."""
    if isinstance(exc, UnidentifiedImageError):
        return ImageRejected("not_an_image", "The file is not an image (JPEG, PNG, WebP, GIF or BMP).")
    if isinstance(exc, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return ImageRejected("too_many_pixels", f"The image has too many pixels; the limit is {max_pixels:,}.")
    truncated = isinstance(exc, EOFError) or "truncated" in str(exc).lower()
    reason = "truncated" if truncated else "corrupt"
    return ImageRejected(reason, f"The image could not be decoded ({reason}): {exc}")


def _check_header(img: Image.Image, *, max_pixels: int, min_side: int) -> str:
    """Format and size from the header alone, before a single pixel is decoded."""
    fmt = img.format or ""
    if fmt not in ALLOWED_FORMATS:
        raise ImageRejected("unsupported_format",
                            f"Format {fmt or 'unknown'} is not accepted; use JPEG, PNG, WebP, GIF or BMP.")
    width, height = img.size
    if width * height > max_pixels:
        raise ImageRejected("too_many_pixels",
                            f"{width}×{height} is {width * height:,} pixels; the limit is {max_pixels:,}.")
    if min(width, height) < min_side:
        raise ImageRejected("too_small",
                            f"{width}×{height} is below the minimum of {min_side} pixels on the shorter side.")
    return fmt


def decode_image(data: bytes, *, max_pixels: int, min_side: int, draft_short_side: int | None = None) -> DecodedImage:
    """Decode ``data`` fully (first frame, EXIF orientation applied, RGB) or raise ``ImageRejected``.

    The pixel count is checked from the header before anything is decoded, so a decompression bomb
    costs nothing. ``draft_short_side``: a JPEG may be decoded with DCT scaling (1/2, 1/4, 1/8) while
    its shorter side stays at least that long, the serving fast path.
    """
    if not data:
        raise ImageRejected("empty", "The file is empty.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            fmt = _check_header(img, max_pixels=max_pixels, min_side=min_side)
            width, height = img.size
            if getattr(img, "is_animated", False):
                img.seek(0)
            if draft_short_side and fmt in ("JPEG", "MPO"):
                img.draft("RGB", (draft_short_side, draft_short_side))
            img.load()
            orientation = img.getexif().get(0x0112, 1)
            img = ImageOps.exif_transpose(img)
            rgb = to_rgb(img)
    except ImageRejected:
        raise
    except DECODE_ERRORS as exc:
        raise _decode_error(exc, max_pixels) from None
    if orientation in (5, 6, 7, 8):  # a quarter turn swaps the sides
        width, height = height, width
    return DecodedImage(rgb=rgb, format=fmt, extension=ALLOWED_FORMATS[fmt], width=width, height=height)


# --- The eval geometry: one owner for training's val/test, ``evaluate`` and ``/predict`` ------------------
#
# "Resize the short side to S = round(size * 256 / 224), then take the central size² square at an
# integer offset." Training caches the resized image (``decode_resized``) and crops it with
# ``center_offsets``; serving runs ``decode_eval_crop``, which is the same two calls. There is no
# second, "equivalent" formulation: a fractional source box resampled straight to the input size
# looks the same on photos and is a different picture for upscaled pixel art (a sub-pixel shift and
# another blur), which is how a served model once scored 44.5% where its job reported 73.3%.

def resize_size(image_size: int) -> int:
    """Short side before the center crop, in the 256:224 proportion torchvision's references use."""
    return int(round(image_size * 256 / 224))


def resize_short_side(img: Image.Image, short_side: int) -> Image.Image:
    """Scale so that ``min(width, height) == short_side`` (bilinear; antialiased when shrinking)."""
    width, height = img.size
    scale = short_side / min(width, height)
    size = (max(short_side, round(width * scale)), max(short_side, round(height * scale)))
    if size == (width, height):
        return img
    return img.resize(size, Image.Resampling.BILINEAR, reducing_gap=None if scale > 1 else 2.0)


def center_offsets(height: int, width: int, side: int) -> tuple[int, int]:
    """(top, left) of the central ``side``² square, in whole pixels (the training cache crops with it too)."""
    return (height - side) // 2, (width - side) // 2


def decode_resized(data: bytes, *, short_side: int, max_pixels: int, min_side: int = 1) -> Image.Image:
    """Decode (JPEG draft while the short side stays >= ``short_side``) and resize the short side to it."""
    img = decode_image(data, max_pixels=max_pixels, min_side=min_side, draft_short_side=short_side).rgb
    return resize_short_side(img, short_side)


def decode_eval_crop(data: bytes, *, image_size: int, max_pixels: int, min_side: int = 8) -> Image.Image:
    """The model's input picture: ``image_size``² RGB, exactly what training validated and tested on.

    Raises ``ImageRejected`` with a reason code on every refusal; the pixel count is checked from the
    header before anything is decoded, so a decompression bomb costs nothing.
    """
    img = decode_resized(data, short_side=resize_size(image_size), max_pixels=max_pixels, min_side=min_side)
    top, left = center_offsets(img.height, img.width, image_size)
    return img.crop((left, top, left + image_size, top + image_size))
