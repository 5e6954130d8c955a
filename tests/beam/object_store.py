"""A stand-in for an object store (gs://, s3://) as a Beam filesystem, `store://`:
flat keys without folders, listed by prefix, each object written whole on close.
Objects live as files under `ROOT[0]`; registering the class (importing this module)
is enough for `FileSystems` to route `store://` paths to it, in this process only."""

import io
import os
import shutil

from apache_beam.io.filesystem import BeamIOError, FileMetadata, FileSystem

ROOT = [""]  # set by the test: the folder that holds the objects
SCHEME = "store"


def _local(path: str) -> str:
    assert path.startswith(f"{SCHEME}://"), path
    return os.path.join(ROOT[0], path[len(SCHEME) + 3 :])


class _Upload(io.BytesIO):
    def __init__(self, path):
        super().__init__()
        self.path = path

    def close(self):
        if not self.closed:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            with open(self.path, "wb") as f:
                f.write(self.getvalue())
        super().close()


class ObjectStore(FileSystem):
    @classmethod
    def scheme(cls):
        return SCHEME

    def join(self, basepath, *paths):
        return "/".join([basepath.rstrip("/"), *paths])

    def split(self, path):
        head, _, tail = path.rpartition("/")
        return head, tail

    def mkdirs(self, path):
        pass  # no folders in an object store

    def has_dirs(self):
        return False

    def _list(self, prefix):
        root = ROOT[0]
        for folder, _, files in os.walk(root):
            for name in files:
                key = os.path.relpath(os.path.join(folder, name), root).replace(os.sep, "/")
                path = f"{SCHEME}://{key}"
                if path.startswith(prefix):
                    local = os.path.join(folder, name)
                    yield FileMetadata(path, os.path.getsize(local), os.path.getmtime(local))

    def create(self, path, mime_type=None, compression_type=None):
        return _Upload(_local(path))

    def open(self, path, mime_type=None, compression_type=None):
        try:
            with open(_local(path), "rb") as f:
                return io.BytesIO(f.read())
        except OSError as error:
            raise BeamIOError(f"cannot open {path}", {path: error}) from error

    def copy(self, source_file_names, destination_file_names):
        raise NotImplementedError

    def rename(self, source_file_names, destination_file_names):
        raise NotImplementedError

    def exists(self, path):
        return os.path.isfile(_local(path))

    def size(self, path):
        return os.path.getsize(_local(path))

    def last_updated(self, path):
        return os.path.getmtime(_local(path))

    def checksum(self, path):
        return str(self.size(path))

    def metadata(self, path):
        return FileMetadata(path, self.size(path), self.last_updated(path))

    def delete(self, paths):
        for path in paths:
            local = _local(path)
            if path.endswith("/"):
                shutil.rmtree(local)
            else:
                os.remove(local)


def put_folder(folder: str, prefix: str) -> str:
    """Copies a local folder into the store under `prefix`; its store:// path."""
    shutil.copytree(folder, _local(f"{SCHEME}://{prefix}"))
    return f"{SCHEME}://{prefix}"
