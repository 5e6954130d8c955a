"""JSON manifests that carry their own checksum.

A manifest (an index's `index.json`, a codes folder's `codes.json`) lists the files
of a folder with their SHA-256. It carries `manifest_sha256`: the SHA-256 of its
canonical JSON (sorted keys, no spaces, ASCII) without that key, so an edited or
damaged manifest is refused before anything it names is trusted. Parsing refuses a
key written twice (JSON allows it; the last one would silently win).
"""

from __future__ import annotations

import hashlib
import json

DIGEST_KEY = "manifest_sha256"


def digest(manifest: dict) -> str:
    """SHA-256 (hex) of a manifest's canonical JSON without its `manifest_sha256`."""
    content = {key: value for key, value in manifest.items() if key != DIGEST_KEY}
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def sign(manifest: dict) -> dict:
    """The manifest with its digest (`manifest_sha256`) set."""
    return {**manifest, DIGEST_KEY: digest(manifest)}


def is_signed(manifest: dict) -> bool:
    """Whether the manifest carries a digest equal to its content's."""
    value = manifest.get(DIGEST_KEY)
    return isinstance(value, str) and value == digest(manifest)


def _no_duplicate_keys(pairs):
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        repeated = sorted({key for key in keys if keys.count(key) > 1})
        raise ValueError(f"key {repeated[0]!r} appears twice")
    return dict(pairs)


def loads(data: bytes):
    """Parses UTF-8 JSON, refusing duplicate keys; ValueError on anything wrong."""
    try:
        return json.loads(data.decode("utf-8"), object_pairs_hook=_no_duplicate_keys)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        raise ValueError(str(error)) from None
