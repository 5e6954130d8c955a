"""Search indexes: exact = brute force, approximate recall, AQD = wsdhash's AQD,
shards merged = one index, and the index file's integrity checks."""

import json
import os

import numpy as np
import pytest

from wsdhash import file_lock
from wsdhash.eval.binary import hamming_distances, pack_codes
from wsdhash.index.binary import BinaryIndex, BinaryIndexParams, IndexParamError
from wsdhash.index.index_file import IndexFileError, read_index_file, write_index_file
from wsdhash.index.quantized import QuantizedIndex
from wsdhash.index.sharded import ShardedIndex, build_index, sign_manifest
from wsdhash.quantization.aqd import aqd_scores

pytest.importorskip("faiss")


def _codes(n, bits, seed):
    return pack_codes(np.random.default_rng(seed).integers(0, 2, (n, bits)) * 2 - 1)


def _clustered(n, bits, seed, centres=20, flips=3):
    rng = np.random.default_rng(seed)
    centre_bits = rng.integers(0, 2, (centres, bits))
    items = centre_bits[rng.integers(0, centres, n)]
    for row in items:
        row[rng.choice(bits, flips, replace=False)] ^= 1
    return pack_codes(items * 2 - 1)


def _assert_matches_brute_force(result, queries, database, k):
    brute = hamming_distances(queries, database)  # (Q, N)
    expected = np.sort(brute, axis=1)[:, :k]
    np.testing.assert_array_equal(result.distances, expected)
    for q in range(len(queries)):
        # Every returned item really is at its distance; ids strictly below the k-th
        # distance are exactly brute force's (ties at the k-th distance may differ).
        np.testing.assert_array_equal(brute[q, result.positions[q]], result.distances[q])
        cut = expected[q, -1]
        assert set(result.positions[q][result.distances[q] < cut]) == set(
            np.flatnonzero(brute[q] < cut)
        )
        # Tie order: ascending position within equal distance.
        for d in np.unique(result.distances[q]):
            positions = result.positions[q][result.distances[q] == d]
            assert np.all(np.diff(positions) > 0)


@pytest.mark.parametrize("bits", [12, 64])
def test_flat_search_equals_brute_force(bits):
    database, queries = _codes(500, bits, 0), _codes(20, bits, 1)
    index = BinaryIndex("flat", database.shape[1]).build(database)
    _assert_matches_brute_force(index.search(queries, 25), queries, database, 25)


@pytest.mark.parametrize("kind", ["ivf", "hnsw", "multihash"])
def test_approximate_indexes_recall_on_clustered_codes(kind):
    items = _clustered(3050, 64, 0)  # queries come from the database's clusters
    database, queries = items[:3000], items[3000:]
    params = BinaryIndexParams(nlist=16, nprobe=8, ef_search=128, nhash=4, hash_bits=16, nflip=3)
    approximate = BinaryIndex(kind, 8, params).build(database).search(queries, 10)
    exact = BinaryIndex("flat", 8).build(database).search(queries, 10)
    # Recall@10 by distance: an approximate neighbour counts when it is as close as the
    # exact 10th (ties make id sets ambiguous).
    hits = approximate.distances <= exact.distances[:, -1:]
    assert hits.mean() >= 0.95, (kind, hits.mean())


def test_aqd_index_equals_wsdhash_aqd_in_chunks():
    rng = np.random.default_rng(0)
    codebooks = rng.normal(size=(3, 16, 8)).astype(np.float32)
    indices = rng.integers(0, 16, (700, 3)).astype(np.uint8)
    queries = rng.normal(size=(9, 8)).astype(np.float32)
    index = QuantizedIndex(codebooks, chunk_items=128).build(indices)
    result = index.search(queries, 30)
    scores = aqd_scores(queries, indices, codebooks)
    np.testing.assert_allclose(
        -result.distances, -np.sort(-scores, axis=1)[:, :30], rtol=1e-5, atol=1e-5
    )
    np.testing.assert_allclose(
        np.take_along_axis(scores, result.positions, 1), -result.distances, rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize("kind", ["flat", "aqd"])
def test_shards_merge_like_one_index(tmp_path, kind):
    rng = np.random.default_rng(3)
    if kind == "flat":
        database, queries, codebooks = _codes(900, 32, 3), _codes(15, 32, 4), None
    else:
        codebooks = rng.normal(size=(2, 16, 6)).astype(np.float32)
        database = rng.integers(0, 16, (900, 2)).astype(np.uint8)
        queries = rng.normal(size=(15, 6)).astype(np.float32)
    ids = np.array([f"img/{i}.jpg" for i in range(900)])
    blocks = [(database[s : s + 250], ids[s : s + 250]) for s in range(0, 900, 250)]
    build_index(str(tmp_path / "sharded"), blocks, kind=kind, codebooks=codebooks)
    build_index(str(tmp_path / "one"), [(database, ids)], kind=kind, codebooks=codebooks)
    sharded, one = ShardedIndex(str(tmp_path / "sharded")), ShardedIndex(str(tmp_path / "one"))
    assert len(sharded.manifest["shards"]) == 4 and sharded.num_items == one.num_items == 900
    assert len(sharded.shards) == 1  # flat and aqd shard files load as one index
    a, b = sharded.search(queries, 20), one.search(queries, 20)
    np.testing.assert_allclose(a.distances, b.distances, rtol=1e-6)
    cut = a.distances[:, -1:]
    for q in range(len(queries)):
        inside = a.distances[q] < cut[q]
        assert set(a.positions[q][inside]) == set(b.positions[q][b.distances[q] < cut[q]])
    assert sharded.ids[a.positions[0, 0]] == f"img/{a.positions[0, 0]}.jpg"


def test_index_file_integrity_errors(tmp_path):
    path = str(tmp_path / "x.idx")
    write_index_file(path, {"kind": "flat", "ids": ["a"]}, {"codes": np.arange(10, dtype=np.uint8)})
    header, arrays = read_index_file(path)
    assert header["kind"] == "flat" and arrays["codes"].tolist() == list(range(10))
    data = open(path, "rb").read()
    (tmp_path / "trunc.idx").write_bytes(data[:-3])
    with pytest.raises(IndexFileError, match="trunc.idx: truncated"):
        read_index_file(str(tmp_path / "trunc.idx"))
    (tmp_path / "flip.idx").write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(IndexFileError, match="flip.idx: checksum mismatch"):
        read_index_file(str(tmp_path / "flip.idx"))
    (tmp_path / "foreign.idx").write_bytes(b"PK\x03\x04" + data)
    with pytest.raises(IndexFileError, match="foreign.idx: not a wsdhash index file"):
        read_index_file(str(tmp_path / "foreign.idx"))
    (tmp_path / "v9.idx").write_bytes(data[:8] + (9).to_bytes(4, "little") + data[12:])
    with pytest.raises(IndexFileError, match="version 9"):
        read_index_file(str(tmp_path / "v9.idx"))
    with pytest.raises(FileNotFoundError, match="no index.json"):
        ShardedIndex(str(tmp_path))
    assert not [f for f in os.listdir(tmp_path) if ".tmp" in f]


def _blocks(database, ids, size):
    return [(database[s : s + size], ids[s : s + size]) for s in range(0, len(database), size)]


def test_header_is_checksummed_and_version_1_files_ask_for_a_rebuild(tmp_path):
    path = tmp_path / "x.idx"
    header = {"kind": "flat", "ids": ["img/a.jpg"]}
    write_index_file(str(path), header, {"c": np.zeros(3, np.uint8)})
    data = path.read_bytes()
    for old, new in ((b"img/a.jpg", b"img/b.jpg"), (b'"flat"', b'"hnsw"')):
        (tmp_path / "edited.idx").write_bytes(data.replace(old, new))  # same length, in place
        with pytest.raises(IndexFileError, match="edited.idx: checksum mismatch in the header"):
            read_index_file(str(tmp_path / "edited.idx"))
    # A version 1 file: the same header without its checksum.
    text_length = int.from_bytes(data[12:20], "little")
    v1 = data[:8] + (1).to_bytes(4, "little") + data[12:20] + data[52:]
    assert len(v1) == len(data) - 32 and text_length > 0
    (tmp_path / "v1.idx").write_bytes(v1)
    with pytest.raises(IndexFileError, match=r"v1.idx: index format version 1.*Rebuild"):
        read_index_file(str(tmp_path / "v1.idx"))


def test_bad_kinds_give_an_index_file_error_naming_the_file(tmp_path):
    database, ids = _codes(40, 16, 0), np.array([f"{i}.jpg" for i in range(40)])
    directory = tmp_path / "index"
    build_index(str(directory), [(database, ids)], kind="hnsw")
    manifest_path = directory / "index.json"
    manifest = json.loads(manifest_path.read_text())
    shard = directory / manifest["shards"][0]["file"]
    header, arrays = read_index_file(str(shard))
    # A shard written (with valid checksums) under another kind than its FAISS index.
    digest = write_index_file(str(shard), {**header, "kind": "flat"}, arrays)
    manifest["shards"][0]["sha256"] = digest
    # The manifests below are re-signed (their digest recomputed) to reach the checks
    # behind the digest's.
    manifest_path.write_text(json.dumps(sign_manifest(manifest)))
    wrong = r"shard-00000.idx: a 'flat' index shard, but the manifest says 'hnsw'"
    with pytest.raises(IndexFileError, match=wrong):
        ShardedIndex(str(directory))
    manifest_path.write_text(json.dumps(sign_manifest({**manifest, "kind": "flat"})))
    wrong = r"shard-00000.idx: the header says kind 'flat' but the FAISS index is a IndexBinaryHNSW"
    with pytest.raises(IndexFileError, match=wrong):
        ShardedIndex(str(directory))
    manifest_path.write_text(json.dumps(sign_manifest({**manifest, "kind": "lsh"})))
    with pytest.raises(IndexFileError, match=r"index.json: unknown index kind 'lsh'"):
        ShardedIndex(str(directory))
    manifest["shards"][0]["sha256"] = write_index_file(
        str(shard), {**header, "kind": "lsh"}, arrays
    )
    manifest_path.write_text(json.dumps(sign_manifest({**manifest, "kind": "lsh"})))
    with pytest.raises(IndexFileError, match=r"index.json: unknown index kind 'lsh'"):
        ShardedIndex(str(directory))


def test_an_interrupted_rebuild_keeps_the_old_index_whole(tmp_path):
    old_codes, new_codes = _codes(300, 32, 0), _codes(300, 32, 1)
    old_ids = np.array([f"old/{i}.jpg" for i in range(300)])
    new_ids = np.array([f"new/{i}.jpg" for i in range(300)])
    directory = tmp_path / "index"
    build_index(str(directory), _blocks(old_codes, old_ids, 100), kind="flat")
    queries = _codes(4, 32, 2)
    before = ShardedIndex(str(directory)).search(queries, 7)

    def killed_after_one_shard():
        yield from _blocks(new_codes, new_ids, 100)[:1]
        raise KeyboardInterrupt  # the build is stopped part-way

    with pytest.raises(KeyboardInterrupt):
        build_index(str(directory), killed_after_one_shard(), kind="flat")
    index = ShardedIndex(str(directory))
    assert list(index.ids) == list(old_ids)  # all old, none new
    after = index.search(queries, 7)
    np.testing.assert_array_equal(after.distances, before.distances)
    assert sorted(os.listdir(tmp_path)) == ["index"]  # no temporary or lock file left

    # A build killed outright (kill -9) leaves its temporary folder: the next build of
    # this index removes it, and the rebuilt index holds only new items.
    (tmp_path / ".index.abcd1234.building").mkdir()
    (tmp_path / ".index.v2.abcd1234.building").mkdir()  # another index's: kept
    build_index(str(directory), _blocks(new_codes, new_ids, 150), kind="flat")
    assert list(ShardedIndex(str(directory)).ids) == list(new_ids)
    assert sorted(os.listdir(tmp_path)) == [".index.v2.abcd1234.building", "index"]


def test_a_shard_from_another_build_is_refused(tmp_path):
    ids = np.array([f"{i}.jpg" for i in range(200)])
    build_index(str(tmp_path / "a"), _blocks(_codes(200, 16, 0), ids, 100), kind="flat")
    build_index(str(tmp_path / "b"), _blocks(_codes(200, 16, 1), ids, 100), kind="flat")
    # The mix an in-place rebuild killed part-way used to leave: same names, other bytes.
    other = (tmp_path / "b" / "shard-00001.idx").read_bytes()
    (tmp_path / "a" / "shard-00001.idx").write_bytes(other)
    with pytest.raises(IndexFileError, match="shard-00001.idx: checksum mismatch with the"):
        ShardedIndex(str(tmp_path / "a"))


def test_build_refuses_a_folder_that_is_not_an_index_and_a_concurrent_build(tmp_path):
    codes, ids = _codes(20, 16, 0), np.array([f"{i}.jpg" for i in range(20)])
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "cat.jpg").write_bytes(b"x")
    with pytest.raises(ValueError, match="photos exists and is not a wsdhash index"):
        build_index(str(tmp_path / "photos"), [(codes, ids)], kind="flat")
    assert os.listdir(tmp_path / "photos") == ["cat.jpg"]
    with file_lock.exclusive(str(tmp_path / "index"), "index", folder=False):
        # flock locks are per open file: a second open in this process conflicts too.
        with pytest.raises(file_lock.LockedError, match="index .*index is in use"):
            build_index(str(tmp_path / "index"), [(codes, ids)], kind="flat")
    assert not (tmp_path / "index").exists()


def _signed_index(tmp_path):
    """A two-shard index with the metadata a build from a codes file records."""
    codes, ids = _codes(60, 16, 0), np.array([f"{i}.jpg" for i in range(60)])
    directory = tmp_path / "index"
    metadata = {"images": "photos", "model_fingerprint": "ab" * 32, "labels": {"0.jpg": ["a"]}}
    build_index(str(directory), _blocks(codes, ids, 30), kind="flat", metadata=metadata)
    return directory, json.loads((directory / "index.json").read_text())


def _tampered(manifest, change):
    manifest = json.loads(json.dumps(manifest))
    change(manifest)
    return manifest


_TAMPERING = {
    "shard listed twice": lambda m: (m["shards"].append(m["shards"][0]), m.update(num_items=90)),
    "labels injected": lambda m: m["labels"].update({"1.jpg": ["evil"]}),
    "fingerprint removed": lambda m: m.pop("model_fingerprint"),
    "learned codes claimed": lambda m: m.update(database_codes="learned"),
    "digest removed": lambda m: m.pop("manifest_sha256"),
}


@pytest.mark.parametrize("change", sorted(_TAMPERING))
def test_an_edited_manifest_is_refused(tmp_path, change):
    """Issue 22 (9): the manifest carries its own digest; an edit is refused."""
    directory, manifest = _signed_index(tmp_path)
    (directory / "index.json").write_text(json.dumps(_tampered(manifest, _TAMPERING[change])))
    with pytest.raises(IndexFileError, match=r"index/index.json: .*rebuild the index"):
        ShardedIndex(str(directory))


@pytest.mark.parametrize(
    "content,message",
    [
        ("[1, 2]", "not a wsdhash index manifest"),
        ('{"format": "wsdhash-index", "format": "x"}', "'format' appears twice"),
        ("{" * 100000, "not a valid manifest"),
        ('"\\ud800', "not a valid manifest"),
    ],
)
def test_a_manifest_that_is_not_an_object_is_one_line_error(tmp_path, content, message):
    directory, _ = _signed_index(tmp_path)
    (directory / "index.json").write_text(content)
    with pytest.raises(IndexFileError, match=message) as raised:
        ShardedIndex(str(directory))
    assert "index.json" in str(raised.value) and "\n" not in str(raised.value)


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda m: (m["shards"].append(m["shards"][0]), m.update(num_items=90)), "listed twice"),
        (lambda m: m.update(num_items=59), "the shards hold 60 items, num_items says 59"),
        (lambda m: m.update(num_items="60"), "num_items must be a positive integer"),
        (lambda m: m["shards"][0].update(file="../other/shard-00000.idx"), "bad shard file"),
        (lambda m: m["shards"][0].update(extra=1), "bad shard entry"),
        (lambda m: m["shards"][0].update(sha256="0" * 63), "bad sha256"),
        (lambda m: m.update(model_fingerprint=7), "model_fingerprint has type int"),
        (lambda m: m.update(database_codes="guessed"), "database_codes must be one of"),
        (lambda m: m.update(version=2), "index version 2; .* Rebuild the index"),
    ],
)
def test_the_manifest_schema_is_checked_behind_its_digest(tmp_path, change, message):
    """Re-signed manifests (a digest that matches) still need a valid schema."""
    directory, manifest = _signed_index(tmp_path)
    edited = sign_manifest(_tampered(manifest, change))
    (directory / "index.json").write_text(json.dumps(edited))
    with pytest.raises(IndexFileError, match=message):
        ShardedIndex(str(directory))


@pytest.mark.parametrize(
    "kind,params,name",
    [
        ("hnsw", {"hnsw_m": 0}, "hnsw_m"),
        ("hnsw", {"hnsw_m": 1}, "hnsw_m"),  # FAISS crashes at search time
        ("hnsw", {"ef_search": 0}, "ef_search"),
        ("multihash", {"nhash": 0}, "nhash"),
        ("multihash", {"hash_bits": 0}, "hash_bits"),
        ("multihash", {"nhash": 2, "hash_bits": 16}, "nhash"),  # 32 bits of a 16-bit code
        ("multihash", {"nflip": -1}, "nflip"),
        ("ivf", {"nprobe": 0}, "nprobe"),
        ("ivf", {"nlist": 61}, "nlist"),  # more cells than items
        ("ivf", {"nlist": -1}, "nlist"),
    ],
)
def test_parameters_out_of_bounds_are_refused_before_any_work(tmp_path, kind, params, name):
    """Issue 22 (10): no FAISS abort, no leftover folder or lock, the old index kept."""
    directory, _ = _signed_index(tmp_path)
    before = sorted(os.listdir(tmp_path))
    codes, ids = _codes(60, 16, 1), np.array([f"new/{i}.jpg" for i in range(60)])
    with pytest.raises(IndexParamError, match=f"^{name}=") as raised:
        build_index(str(directory), [(codes, ids)], kind=kind, params=BinaryIndexParams(**params))
    assert raised.value.name == name
    assert sorted(os.listdir(tmp_path)) == before
    assert ShardedIndex(str(directory)).ids[0] == "0.jpg"


def test_an_index_that_cannot_be_read_back_replaces_nothing(tmp_path, monkeypatch):
    """A build FAISS accepted but that cannot be opened and queried is refused before
    the rename: the old index stays whole."""
    directory, _ = _signed_index(tmp_path)
    before = sorted(os.listdir(tmp_path))
    original = BinaryIndex.to_arrays

    def unreadable(self):
        header, arrays = original(self)
        return header, {"faiss": arrays["faiss"][: len(arrays["faiss"]) // 2]}

    monkeypatch.setattr(BinaryIndex, "to_arrays", unreadable)
    codes, ids = _codes(60, 16, 1), np.array([f"new/{i}.jpg" for i in range(60)])
    with pytest.raises(ValueError, match="cannot be read or searched back.*nothing was replaced"):
        build_index(str(directory), [(codes, ids)], kind="hnsw")
    assert sorted(os.listdir(tmp_path)) == before
    index = ShardedIndex(str(directory))
    assert index.ids[0] == "0.jpg" and index.num_items == 60


def test_sort_rows_orders_by_distance_then_position_with_padding_last():
    """The packed-key path for integer distances against a plain sort of each row."""
    from wsdhash.index.results import sort_rows

    rng = np.random.default_rng(0)
    distances = rng.integers(0, 5, (6, 40)).astype(np.int32)
    positions = rng.permutation(6 * 40).reshape(6, 40).astype(np.int64) * 1000
    positions[:, -3:] = -1  # padding, as FAISS pads with its own distance
    distances[:, -3:] = np.iinfo(np.int32).max
    for k in (1, 7, 40):
        result = sort_rows(distances, positions, k)
        for row in range(6):
            pairs = sorted(
                zip(distances[row].tolist(), positions[row].tolist()),
                key=lambda pair: (pair[1] < 0, pair[0], pair[1]),
            )[:k]
            assert (
                list(zip(result.distances[row].tolist(), result.positions[row].tolist())) == pairs
            )
