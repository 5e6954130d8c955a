"""What an uploaded image must be before it reaches the model, and database thumbnails.

An upload is checked from its bytes and header only (nothing is decoded): not empty,
at most `max_upload_bytes`, JPEG or PNG (another format Pillow recognises, such as GIF,
WebP or BMP, is a 415 naming it; anything else a 400), and at most `max_pixels`
(width x height from the header). A PNG whose first chunk is not its header (IHDR),
or a JPEG far too small for the size its header claims (under one bit per 8 x 8
block, which no Huffman-coded JPEG can be: `data/image_header.jpeg_too_small`, the rule the
exported model applies), is a 400 "corrupt or truncated" without reaching the model.
The model then decodes it (alpha, grayscale and CMYK JPEG included); one it cannot
decode is a 400 naming it (engine.status_error).
"""

from __future__ import annotations

import io
import warnings

from wsdhash.service.errors import Limits, input_error, limit_error

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_PNG_HEADER = b"\x00\x00\x00\x0dIHDR"  # the first chunk: 13 bytes of IHDR
_JPEG_MAGIC = b"\xff\xd8\xff"
_CORRUPT = "corrupt or truncated image: it cannot be decoded."


def unreadable_errors() -> tuple:
    """The exceptions of an image file Pillow cannot read (`except unreadable_errors()`)."""
    from PIL import Image

    return (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)


def jpeg_too_small(width: int, height: int, size: int) -> bool:
    """True for a JPEG of `size` bytes that cannot hold width x height pixels: a
    Huffman-coded scan spends at least one bit on every 8 x 8 block (wsdhash/data/image_header.py)."""
    blocks = -(-width // 8) * -(-height // 8)
    return size * 8 < blocks


def check_size(size: int, what: str, limits: Limits) -> None:
    """Raises the 413 for an upload of more than `max_upload_bytes`."""
    if size > limits.max_upload_bytes:
        raise limit_error(
            "max_upload_bytes",
            f"{what}: {size} bytes, more than max_upload_bytes={limits.max_upload_bytes}.",
            value=size,
            maximum=limits.max_upload_bytes,
        )


def check_upload(data: bytes, what: str, limits: Limits) -> None:
    """Raises the ServiceError for an upload that must not reach the model."""
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise input_error(what, "empty image (0 bytes).")
    check_size(len(data), what, limits)
    if data.startswith(_PNG_MAGIC) and data[8:16] != _PNG_HEADER:
        raise input_error(what, _CORRUPT)  # PNG magic, then no PNG header
    known = data.startswith((_PNG_MAGIC, _JPEG_MAGIC))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:  # reads the header only
                kind, (width, height) = image.format, image.size
    except Image.DecompressionBombError:
        raise limit_error(
            "max_pixels",
            f"{what}: far more than max_pixels={limits.max_pixels} pixels.",
            maximum=limits.max_pixels,
        ) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        if known:
            return  # a broken header: the model says how it is broken
        raise input_error(what, "not an image (neither JPEG nor PNG).") from None
    if not known:
        raise input_error(
            what, f"a {kind} image; send JPEG or PNG (the model reads only those).", status=415
        )
    if width * height > limits.max_pixels:
        raise limit_error(
            "max_pixels",
            f"{what}: {width} x {height} = {width * height} pixels, more than "
            f"max_pixels={limits.max_pixels}.",
            value=width * height,
            maximum=limits.max_pixels,
        )
    if kind == "JPEG" and jpeg_too_small(width, height, len(data)):
        raise input_error(what, f"{_CORRUPT} (its header claims {width} x {height})")


def thumbnail(file, size: int) -> tuple[bytes, str]:
    """(JPEG bytes, media type) of an image file (a path or a file opened in binary
    mode) shrunk to fit size x size, upright."""
    from PIL import Image, ImageOps

    with Image.open(file) as image:
        image.draft("RGB", (size, size))  # JPEG: decode at a reduced scale
        image = ImageOps.exif_transpose(image).convert("RGB")
        image.thumbnail((size, size))
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=85)
    return buffer.getvalue(), "image/jpeg"
