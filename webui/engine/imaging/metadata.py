"""Where a picture carries its infotext, as A1111 writes and reads it: PNG's `parameters` text chunk; JPEG's and
WebP's EXIF UserComment, in piexif's "unicode" encoding (b"UNICODE\\0" + UTF-16 big-endian), the one model sites and
A1111's PNG Info read. Reading never decodes pixels except for a PNG whose chunk sits after the image data, and then
only below the size limit."""
from __future__ import annotations

import io

from PIL import Image

EXIF_IFD = 0x8769  # the Exif sub-IFD pointer
USER_COMMENT = 0x9286
_PREFIXES = {b"UNICODE\0": "utf-16-be", b"ASCII\0\0\0": "ascii", b"JIS\0\0\0\0\0": "shift_jis",
             b"\0\0\0\0\0\0\0\0": "utf-8"}
FORMATS = {"png": "PNG", "jpg": "JPEG", "jpeg": "JPEG", "webp": "WEBP"}  # samples_format → PIL format
JPEG_QUALITY = 80  # A1111's jpeg_quality default (also used for WebP)


def user_comment(text: str) -> bytes:
    return b"UNICODE\0" + text.encode("utf-16-be")


def read_user_comment(raw: bytes) -> str:
    """piexif.helper.UserComment.load: the 8-byte charset prefix, then the text. A UTF-16 comment written
    little-endian by other tools (a BOM says so) is read too."""
    encoding = _PREFIXES.get(raw[:8])
    body = raw[8:] if encoding else raw
    if encoding == "utf-16-be" and body[:2] == b"\xff\xfe":
        encoding = "utf-16"
    return body.decode(encoding or "utf-8", errors="replace").rstrip("\0")


def exif_with_comment(text: str) -> bytes:
    exif = Image.Exif()
    exif.get_ifd(EXIF_IFD)[USER_COMMENT] = user_comment(text)
    return exif.tobytes()


def encode(image: Image.Image, infotext: str | None, fmt: str = "png", texts: dict[str, str] | None = None
           ) -> bytes:
    """The picture as a file of `fmt` (png, jpg, webp) carrying its infotext where A1111 puts it. `texts`: more
    PNG text chunks (Extras' "postprocessing"); JPEG and WebP carry only the infotext, as A1111's do."""
    from PIL.PngImagePlugin import PngInfo

    kind = FORMATS[fmt.lower()]
    buffer = io.BytesIO()
    if kind == "PNG":
        meta = None
        chunks = {"parameters": infotext, **(texts or {})}
        if any(chunks.values()):
            meta = PngInfo()
            for key, value in chunks.items():
                if value:
                    meta.add_text(key, value)
        image.save(buffer, format="PNG", pnginfo=meta)
    else:
        extra = {"exif": exif_with_comment(infotext)} if infotext else {}
        image.convert("RGB").save(buffer, format=kind, quality=JPEG_QUALITY, **extra)
    return buffer.getvalue()


def infotext_of(image: Image.Image) -> str | None:
    """An opened picture's infotext, or None. For a PNG whose chunk comes after the pixels the caller must have
    checked the size: reading `image.text` decodes the image."""
    text = image.info.get("parameters")
    if text is None and image.format == "PNG":
        text = image.text.get("parameters")
    if text is None and image.format in ("JPEG", "WEBP", "MPO", "TIFF"):
        comment = image.getexif().get_ifd(EXIF_IFD).get(USER_COMMENT)
        if isinstance(comment, bytes) and comment:
            text = read_user_comment(comment)
        elif isinstance(comment, str) and comment:
            text = comment
    return None if text is None else str(text)
