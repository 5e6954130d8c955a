"""GET /items/{id}/thumbnail and /items/{id}/image: a database image, shrunk (JPEG,
cached) or as it is. `id` is an item's position or its exact id in the index; an id
never names a file, and the image is opened only inside the images root, checked at
every open (engine.open_item)."""

import collections
import mimetypes
import os
import threading

from fastapi import APIRouter
from fastapi.responses import Response

from wsdhash.service import uploads
from wsdhash.service.dependencies import EngineDep, ThumbnailsDep
from wsdhash.service.errors import ServiceError, limit_error

router = APIRouter()

THUMBNAIL_SIZES = (16, 512)
_CACHE_CONTROL = {"Cache-Control": "max-age=3600"}


class ThumbnailCache:
    """Thumbnails by the identity of the file they were made from (device, inode,
    modification time, size), so a replaced file gets a new one; the least recently
    used go first once there are more than `size`."""

    def __init__(self, size: int):
        self.size = size
        self._cache: collections.OrderedDict = collections.OrderedDict()
        self._lock = threading.Lock()

    def get(self, file, size: int):
        """(JPEG bytes, media type) of the open image `file` shrunk to fit size x size."""
        info = os.fstat(file.fileno())
        key = (info.st_dev, info.st_ino, info.st_mtime_ns, info.st_size, size)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        made = uploads.thumbnail(file, size)
        with self._lock:
            self._cache[key] = made
            while len(self._cache) > self.size:
                self._cache.popitem(last=False)
        return made


def open_item(engine, item: str):
    """(position, the item's image opened for reading), checked inside the images
    root as it is opened (engine.open_item); a 404 naming the id otherwise."""
    position = engine.position(item)
    if position is None:
        raise ServiceError(404, f"no item {item[:200]!r} in the index.", input="id")
    opened = engine.open_item(position)
    if opened is None:
        raise ServiceError(
            404,
            f"item {position} has no image inside the images root "
            f"({engine.images_root or 'none: start with --images_root'}).",
            input="id",
        )
    return position, opened


def _unreadable(position: int, error: Exception) -> ServiceError:
    return ServiceError(404, f"item {position}: its image cannot be read ({error}).", input="id")


# No docstrings on the handlers: FastAPI would publish them in /openapi.json.
@router.get("/items/{item:path}/thumbnail")
def item_thumbnail(item: str, engine: EngineDep, thumbnails: ThumbnailsDep, size: int = 128):
    low, high = THUMBNAIL_SIZES
    if not low <= size <= high:
        raise limit_error(
            "thumbnail_size",
            f"size must be {low}..{high}; got {size}.",
            value=size,
            maximum=high,
            status=400,
        )
    position, opened = open_item(engine, item)
    with opened:
        try:
            data, media = thumbnails.get(opened, size)
        except uploads.unreadable_errors() as error:
            raise _unreadable(position, error) from None
    return Response(data, media_type=media, headers=_CACHE_CONTROL)


@router.get("/items/{item:path}/image")
def item_image(item: str, engine: EngineDep):
    position, opened = open_item(engine, item)
    with opened:
        try:
            data = opened.read()
        except OSError as error:
            raise _unreadable(position, error) from None
    media = mimetypes.guess_type(opened.name)[0] or "application/octet-stream"
    return Response(data, media_type=media, headers=_CACHE_CONTROL)
