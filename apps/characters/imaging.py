"""Decoding and validating image bytes with Pillow. No Django: limits come in as arguments.

Every refusal is an ``ImageRejected`` with a reason code, so callers can count them.
"""
from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from PIL import Image as PILImage
from PIL import ImageFile, ImageOps, UnidentifiedImageError

ALLOWED_FORMATS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif", "BMP": "bmp", "MPO": "jpg"}

# Pillow's own bomb guard (it raises past twice this value); ours is checked first from the header.
PILImage.MAX_IMAGE_PIXELS = None
ImageFile.LOAD_TRUNCATED_IMAGES = False


class ImageRejected(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass
class DecodedImage:
    rgb: PILImage.Image  # oriented, RGB, first frame
    format: str  # Pillow's format name, e.g. "JPEG"
    extension: str  # e.g. "jpg"
    width: int
    height: int


def _to_rgb(img: PILImage.Image) -> PILImage.Image:
    """Any mode (CMYK, P, LA, RGBA, I;16, 1, ...) to RGB; transparency composited on white."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit or 32-bit integer greyscale: scale into 8 bits by its own range.
        img = img.convert("I")
        low, high = img.getextrema()
        scale = 255.0 / (high - low) if high > low else 1.0
        img = img.point(lambda v: (v - low) * scale).convert("L")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        img = img.convert("RGBA")
        background = PILImage.new("RGBA", img.size, (255, 255, 255, 255))
        background.alpha_composite(img)
        return background.convert("RGB")
    if img.mode != "RGB":
        return img.convert("RGB")
    return img


def decode_image(data: bytes, *, max_pixels: int, min_side: int) -> DecodedImage:
    """Decode ``data`` fully or raise ``ImageRejected``; the content decides the format, not a name."""
    if not data:
        raise ImageRejected("empty", "The file is empty.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", PILImage.DecompressionBombWarning)
            img = PILImage.open(io.BytesIO(data))
            fmt = img.format or ""
            if fmt not in ALLOWED_FORMATS:
                raise ImageRejected(
                    "unsupported_format", f"Format {fmt or 'unknown'} is not accepted; use JPEG, PNG, WebP, GIF or BMP."
                )
            width, height = img.size
            if width * height > max_pixels:
                raise ImageRejected(
                    "too_many_pixels", f"{width}×{height} is {width * height:,} pixels; the limit is {max_pixels:,}."
                )
            if getattr(img, "is_animated", False):
                img.seek(0)
            img.load()
            img = ImageOps.exif_transpose(img)
            rgb = _to_rgb(img)
    except ImageRejected:
        raise
    except UnidentifiedImageError:
        raise ImageRejected("not_an_image", "The file is not an image Pillow can read.") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, PILImage.DecompressionBombError) as exc:
        message = str(exc)
        reason = "truncated" if "truncated" in message.lower() or isinstance(exc, EOFError) else "corrupt"
        raise ImageRejected(reason, f"The image could not be decoded: {message}") from None
    width, height = rgb.size
    if min(width, height) < min_side:
        raise ImageRejected(
            "too_small", f"{width}×{height} is below the minimum of {min_side} pixels on the shorter side."
        )
    return DecodedImage(rgb=rgb, format=fmt, extension=ALLOWED_FORMATS[fmt], width=width, height=height)


def make_thumbnail(rgb: PILImage.Image, size: int) -> bytes:
    thumb = rgb.copy()
    thumb.thumbnail((size, size), PILImage.Resampling.LANCZOS, reducing_gap=2.0)
    out = io.BytesIO()
    thumb.save(out, format="WEBP", quality=80, method=4)
    return out.getvalue()
