"""Opening an image that came from outside (an upload, an API client's bytes, a data: URL, a path) with its pixel
count checked before any pixel is decoded.

A PNG of a few kilobytes can declare 12000x12000 pixels; decoding it takes gigabytes once it is converted to RGBA
and copied by the code that follows. `PIL.Image.open` reads only the header, so the size is known for free:
`open_limited` refuses an image over the limit there, and returns the lazily opened image otherwise (the caller
decodes it). The limit names itself in the message so the user knows what to send instead."""
from __future__ import annotations

import base64
import binascii
import io
import os
import warnings
from typing import BinaryIO

import numpy as np
from PIL import Image

from .ops import InvalidImage

Source = str | os.PathLike | bytes | bytearray | BinaryIO


def describe_limit(max_pixels: int) -> str:
    side = int(max_pixels ** 0.5)
    square = f" ({side}x{side})" if side * side == max_pixels else ""
    return f"{max_pixels:,} pixels{square}"


def check_pixels(width: int, height: int, max_pixels: int, what: str = "Image") -> None:
    """Raise InvalidImage (a UserError) when width x height is over max_pixels (0 = no limit)."""
    if max_pixels and width * height > max_pixels:
        raise InvalidImage(f"{what} is {width}x{height} ({width * height:,} pixels), over the limit of "
                           f"{describe_limit(max_pixels)}; make it smaller first")


def _data_url_bytes(text: str, what: str = "Image") -> bytes:
    _, _, payload = text.partition(",")
    return _base64_bytes(payload, what)


def _base64_bytes(payload: str, what: str = "Image") -> bytes:
    try:
        return base64.b64decode(payload, validate=False)
    except (binascii.Error, ValueError) as e:
        raise InvalidImage(f"Cannot read the {what.lower()}: bad base64 data ({e})") from e


def open_limited(source: Source, max_pixels: int, what: str = "Image") -> Image.Image:
    """The image at `source`, opened (header only) and size-checked; not yet decoded. A str starting with
    "data:" is a data URL. Raises InvalidImage for an unreadable image or one over `max_pixels`."""
    if isinstance(source, str) and source.startswith("data:"):
        source = _data_url_bytes(source, what)
    if isinstance(source, (bytes, bytearray)):
        source = io.BytesIO(source)
    try:
        with warnings.catch_warnings():
            # PIL warns (and past twice its own bound, refuses) on its MAX_IMAGE_PIXELS; ours is checked below
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(source)
    except Image.DecompressionBombError as e:
        raise InvalidImage(f"{what} is too large ({e}); the limit is {describe_limit(max_pixels)}") from e
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError... for data that is no image
        raise InvalidImage(f"Cannot read the {what.lower()}: {e}") from e
    try:
        check_pixels(*image.size, max_pixels, what)
    except InvalidImage:
        image.close()
        raise
    return image


def open_base64(text: str, max_pixels: int, what: str = "Image") -> Image.Image:
    """An image sent as base64 text (an API client's), bare or as a data: URL; never a path. As open_limited."""
    if not isinstance(text, str) or not text.strip():
        raise InvalidImage(f"{what} is empty: send the image as base64 text")
    data = _data_url_bytes(text, what) if text.startswith("data:") else _base64_bytes(text.strip(), what)
    return open_limited(data, max_pixels, what)


def check_decoded(image: Image.Image | np.ndarray, max_pixels: int, what: str = "Image") -> None:
    """The same limit for an image some other code already holds in memory (it cannot be undone, but it
    goes no further)."""
    if isinstance(image, np.ndarray):
        height, width = image.shape[:2]
    else:
        width, height = image.size
    check_pixels(width, height, max_pixels, what)
