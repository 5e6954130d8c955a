"""The bytes of an encoded image, read in TensorFlow's graph without decoding it: which
format it is, its size from its header, its EXIF orientation, and whether its header
already shows it broken.

The exported SavedModel's `serving_default` (wsdhash/export/module.py) runs these on
every item before it decodes it, so that a file that is not a JPEG or PNG, one whose
header claims more than the pixel limit (a decompression bomb) and two kinds of broken
files are refused at the cost of reading a few bytes (`header_status`). The training
pipeline decodes with OpenCV (wsdhash/data/preprocessing.py), which turns a JPEG upright
by its EXIF orientation too; `exif_orientation` and `apply_orientation` do the same in
the graph, so that an exported model sees a photo as training did.

`status` values (`STATUS_NAMES`) are what the export's `status` output reports for each
item.
"""

from __future__ import annotations

import tensorflow as tf

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PNG_HEADER = b"\x00\x00\x00\x0dIHDR"  # the first chunk after the magic: 13 bytes of IHDR
_EXIF_MARKER = b"Exif\x00\x00"
_APP1 = b"\xff\xe1"
_EXIF_SEARCH_BYTES = 65536  # an APP1 segment (where EXIF lives) is at most 64 KiB
_EXIF_MAX_ENTRIES = 64  # IFD0 entries read when looking for the orientation tag
_ORIENTATION_TAG = 0x0112

DEFAULT_MAX_PIXELS = 50_000_000
"""Largest image (width x height, read from the file header) the serving signature
decodes; 50 megapixels covers 8160 x 6120 phone photos. Larger images give
`valid = False` and `status = STATUS_TOO_LARGE` without being decoded."""

STATUS_OK = 0
STATUS_NOT_AN_IMAGE = 1  # neither JPEG nor PNG magic bytes
STATUS_UNDECODABLE = 2  # JPEG/PNG magic but a broken or truncated body
STATUS_TOO_LARGE = 3  # header dimensions above max_pixels
STATUS_NAMES = {
    STATUS_OK: "ok",
    STATUS_NOT_AN_IMAGE: "not a JPEG or PNG image",
    STATUS_UNDECODABLE: "corrupt or truncated image",
    STATUS_TOO_LARGE: "image larger than the pixel limit",
}


def _read_uint(data: tf.Tensor, position: tf.Tensor, size: int, little_endian: tf.Tensor):
    """Unsigned `size`-byte integer at `position` of a byte string (0 past its end)."""
    position = tf.minimum(position, tf.strings.length(data))
    raw = tf.io.decode_raw(tf.strings.substr(data, position, size), tf.uint8)
    raw = tf.cast(tf.pad(raw, [[0, size - tf.shape(raw)[0]]]), tf.int64)
    big = tf.reduce_sum(raw * tf.constant([256 ** (size - 1 - i) for i in range(size)], tf.int64))
    little = tf.reduce_sum(raw * tf.constant([256**i for i in range(size)], tf.int64))
    return tf.where(little_endian, little, big)


def exif_orientation(data: tf.Tensor) -> tf.Tensor:
    """The EXIF orientation (1-8) of JPEG bytes; 1 when there is none or it is unreadable.

    Reads the TIFF structure of the APP1 "Exif" segment: byte order, the offset of the
    first image directory, and its entries up to the orientation tag 0x0112.
    """
    head = tf.strings.substr(data, 0, _EXIF_SEARCH_BYTES)
    parts = tf.strings.split(head, sep=_EXIF_MARKER, maxsplit=1)
    marker = tf.strings.length(parts[0])  # where "Exif\0\0" starts (if it occurs)
    tiff = marker + len(_EXIF_MARKER)
    found = (tf.size(parts) == 2) & (marker >= 4)
    found &= tf.strings.substr(head, tf.maximum(marker - 4, 0), 2) == _APP1
    little_endian = tf.strings.substr(head, tf.minimum(tiff, tf.strings.length(head)), 2) == b"II"
    directory = tf.cast(tiff, tf.int64) + _read_uint(head, tiff + 4, 4, little_endian)
    directory = tf.cast(tf.minimum(directory, _EXIF_SEARCH_BYTES), tf.int32)
    count = tf.minimum(_read_uint(head, directory, 2, little_endian), _EXIF_MAX_ENTRIES)
    entries = tf.range(tf.cast(count, tf.int32))
    starts = directory + 2 + 12 * entries
    tags = tf.map_fn(
        lambda start: _read_uint(head, start, 2, little_endian),
        starts,
        fn_output_signature=tf.int64,
    )
    values = tf.map_fn(
        lambda start: _read_uint(head, start + 8, 2, little_endian),
        starts,
        fn_output_signature=tf.int64,
    )
    matches = tf.boolean_mask(values, tf.equal(tags, _ORIENTATION_TAG))
    orientation = tf.cond(
        tf.size(matches) > 0, lambda: matches[0], lambda: tf.constant(1, tf.int64)
    )
    valid = found & (orientation >= 1) & (orientation <= 8)
    return tf.where(valid, tf.cast(orientation, tf.int32), 1)


def apply_orientation(image: tf.Tensor, orientation: tf.Tensor) -> tf.Tensor:
    """Turns an (H, W, C) image upright for an EXIF orientation 1-8 (as OpenCV does)."""
    transpose = lambda: tf.transpose(image, [1, 0, 2])
    return tf.switch_case(
        orientation - 1,
        [
            lambda: image,  # 1: upright
            lambda: tf.image.flip_left_right(image),  # 2: mirrored
            lambda: tf.image.rot90(image, 2),  # 3: upside down
            lambda: tf.image.flip_up_down(image),  # 4: mirrored upside down
            transpose,  # 5: mirrored, rotated
            lambda: tf.image.rot90(image, 3),  # 6: needs 90 degrees clockwise
            lambda: tf.image.rot90(transpose(), 2),  # 7: transverse
            lambda: tf.image.rot90(image, 1),  # 8: needs 90 degrees counter-clockwise
        ],
    )


def image_header_size(data: tf.Tensor, is_jpeg: tf.Tensor) -> tf.Tensor:
    """(height, width) int64 from a JPEG's frame header or a PNG's IHDR chunk, without
    decoding the pixels (fails on a JPEG without a readable frame header)."""

    def jpeg():
        return tf.cast(tf.image.extract_jpeg_shape(data)[:2], tf.int64)

    def png():
        big_endian = tf.constant(False)
        return tf.stack([_read_uint(data, 20, 4, big_endian), _read_uint(data, 16, 4, big_endian)])

    return tf.cond(is_jpeg, jpeg, png)


def jpeg_too_small(height: tf.Tensor, width: tf.Tensor, size: tf.Tensor) -> tf.Tensor:
    """True for a JPEG of `size` bytes that cannot hold height x width pixels.

    A Huffman-coded scan (baseline or progressive) spends at least one bit on every
    8 x 8 block of a component (a DC code is at least a bit long), so a file of fewer
    bytes than an eighth of its luma blocks is truncated or lies about its size: a
    64 x 64 image's data under a 7000 x 7000 header decodes to grey without an error.
    (An arithmetic-coded JPEG, very rare, could be smaller and is refused too.)"""
    blocks = ((height + 7) // 8) * ((width + 7) // 8)
    return tf.cast(size, tf.int64) * 8 < blocks


def header_status(data: tf.Tensor, max_pixels: int) -> tuple[tf.Tensor, tf.Tensor]:
    """(is_jpeg, status) of one encoded image from its first bytes and header: STATUS_OK,
    or why it is refused before decoding (not JPEG or PNG; header over `max_pixels`; a
    PNG whose first chunk is not IHDR; a JPEG too small for its header's size)."""
    is_jpeg = tf.io.is_jpeg(data)
    is_png = tf.strings.substr(data, 0, len(PNG_MAGIC)) == PNG_MAGIC
    known = is_jpeg | is_png
    header = tf.cond(
        known, lambda: image_header_size(data, is_jpeg), lambda: tf.zeros([2], tf.int64)
    )
    too_large = header[0] * header[1] > max_pixels
    start = PNG_MAGIC + PNG_HEADER  # (substr from 0: a position past the end raises)
    no_png_header = is_png & (tf.strings.substr(data, 0, len(start)) != start)
    too_small = is_jpeg & jpeg_too_small(header[0], header[1], tf.strings.length(data))
    status = tf.where(
        no_png_header,
        STATUS_UNDECODABLE,
        tf.where(too_large, STATUS_TOO_LARGE, tf.where(too_small, STATUS_UNDECODABLE, STATUS_OK)),
    )
    return is_jpeg, tf.where(known, status, STATUS_NOT_AN_IMAGE)
