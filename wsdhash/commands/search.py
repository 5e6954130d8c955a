"""Builds and queries search indexes over learned codes.

    python -m wsdhash.search build --codes=RUN/codes.h5 --output=INDEX [--kind=auto]
        [--shard_size=N] [--nlist=0 --nprobe=16 --hnsw_m=32 --ef_search=64 ...]
    python -m wsdhash.search build --codes=CODES_FOLDER --output=INDEX [--shard_size=N]
    python -m wsdhash.search build --images=FOLDER --model=EXPORTED --output=INDEX
    python -m wsdhash.search query --index=INDEX --codes=RUN/codes.h5|CODES_FOLDER
        [--num_queries=5] [--k=10] [--json]
    python -m wsdhash.search query --index=INDEX --images=a.jpg,b.jpg --model=EXPORTED

Kinds: `flat` (exact Hamming), `ivf`, `hnsw`, `multihash` (approximate FAISS binary
indexes) for hash codes; `aqd` for WSDHQ quantization codes (the codes file's
codebooks; queries use their continuous features). `auto` picks `aqd` when the codes
file has codebooks (or the SavedModel a quantizer), else `flat`. Images are encoded
with an exported SavedModel (`python -m wsdhash.export`): packed codes, or for a WSDHQ
model its quantization codes and the codebooks it carries (queries: its embedding).
Results: ids (image paths, or integers where the codes carry no names),
positions and distances (Hamming, or minus the AQD inner product), ties in ascending
position (wsdhash/index/results.py).

A codes folder (wsdhash/eval/codes_folder.py: the sharded output of `python -m
wsdhash.pipeline encode`) is read one codes shard at a time, and each becomes one
index shard (or, with --shard_size, the items are regrouped into shards of that many),
so a build holds about one shard's codes, never the whole database: memory is bounded
by the shard size. Its items keep the folder's ids (integers stay integers).

Images the SavedModel marks `valid = False` (not a JPEG or PNG, truncated, too large)
are never indexed: `build` skips them with one warning line naming them; a query
image that is invalid is a one-line error naming it. Errors are one line
(wsdhash/cli.py): bad flags and files exit 2, a missing or damaged index 1.

Index parameters are checked against their bounds (wsdhash/index/binary.py,
PARAM_BOUNDS) before anything is read or built; an error names the flag. A query
checks first that the codes file (or the model) fits the index, as the service does
(wsdhash/index/fit.py): the same network (weights fingerprints, where both recorded
one), the same code width, the same codebooks for an AQD index; else exit 2.
"""

from __future__ import annotations

import json
import os
import sys

from absl import flags

from wsdhash import cli, flag_bounds
from wsdhash.index.binary import PARAM_BOUNDS
from wsdhash.index.images import (  # noqa: F401
    check_takes_images,
    encode_images,
    images_for_index,
    images_for_query,
    model_index_layout,
)
from wsdhash.index.kinds import INDEX_KINDS, KINDS

FLAGS = flags.FLAGS
flags.DEFINE_string(
    "codes", None, "Codes file (codes.h5 of a run, or a baseline's), or a codes folder."
)
flags.DEFINE_string("split", None, "Codes-file split (build: database, query: query).")
flags.DEFINE_string("images", None, "build: an image folder; query: comma-separated images.")
flags.DEFINE_string("model", None, "Exported SavedModel that encodes --images.")
flags.DEFINE_string("output", None, "build: the index directory to write.")
flags.DEFINE_string("index", None, "query: the index directory.")
flags.DEFINE_enum("kind", "auto", ["auto", *KINDS], "")
flags.DEFINE_integer(
    "shard_size", 0, "Items per shard (0: one shard; from a codes folder, one per codes shard)."
)
flags.DEFINE_integer("nlist", 0, "ivf: cells (0: about 4 sqrt(N)).")
flags.DEFINE_integer("nprobe", 16, "ivf: cells searched.")
flags.DEFINE_integer("hnsw_m", 32, "hnsw: links per node.")
flags.DEFINE_integer("ef_search", 64, "hnsw: search beam.")
flags.DEFINE_integer("nhash", 4, "multihash: hash tables.")
flags.DEFINE_integer("hash_bits", 16, "multihash: bits per table.")
flags.DEFINE_integer("nflip", 2, "multihash: bit flips searched.")
flags.DEFINE_integer("k", 10, "query: neighbours per query.")
flags.DEFINE_integer("num_queries", 0, "query by codes: the first N queries (0: all).")
flags.DEFINE_integer("batch_size", 64, "Images per SavedModel call.")
flags.DEFINE_bool("json", False, "query: print JSON instead of a table.")
for _kind_bounds in PARAM_BOUNDS.values():
    flag_bounds.declare_ranges(_kind_bounds)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def _image_files(folder: str) -> list[str]:
    if not os.path.isdir(folder):
        raise cli.UsageError(f"--images={folder} is not a folder.")
    found = sorted(
        os.path.relpath(os.path.join(d, f), folder)
        for d, _, files in os.walk(folder)
        for f in files
        if f.lower().endswith(IMAGE_SUFFIXES)
    )
    if not found:
        raise cli.UsageError(f"--images={folder} holds no .jpg/.jpeg/.png files.")
    return found


def _load_model():
    import tensorflow as tf

    if not FLAGS.model:
        raise cli.UsageError("--images needs --model (an exported SavedModel).")
    model = tf.saved_model.load(FLAGS.model)
    check_takes_images(model, f"--model={FLAGS.model}")
    return model


def is_codes_folder(path: str) -> bool:
    from wsdhash.eval import codes_folder

    return codes_folder.is_codes_folder(path)


def _codes_split(contents, name: str):
    if name not in ("query", "database"):
        raise cli.UsageError(f"--split must be query or database; got {name!r}.")
    return getattr(contents, name)


def _smallest_block_size(num_items: int) -> int:
    """Items in the smallest shard (the last): ivf's cells must not outnumber them."""
    size = FLAGS.shard_size or num_items
    return num_items % size or size


def _blocks(codes, ids):
    size = FLAGS.shard_size or len(codes)
    for start in range(0, len(codes), size):
        yield codes[start : start + size], ids[start : start + size]


def build():
    import numpy as np

    from wsdhash.eval import read_codes_file
    from wsdhash.eval.scorers import scorer_kind
    from wsdhash.index.binary import BinaryIndexParams
    from wsdhash.index.sharded import build_index
    from wsdhash.model_fingerprint import export_fingerprint

    if not FLAGS.output:
        raise cli.UsageError("build needs --output (the index directory).")
    params = BinaryIndexParams(
        nlist=FLAGS.nlist,
        nprobe=FLAGS.nprobe,
        hnsw_m=FLAGS.hnsw_m,
        ef_search=FLAGS.ef_search,
        nhash=FLAGS.nhash,
        hash_bits=FLAGS.hash_bits,
        nflip=FLAGS.nflip,
    )
    if FLAGS.kind != "auto":
        INDEX_KINDS.get(FLAGS.kind).check_params(params)  # before reading or encoding anything
    codebooks = None
    if FLAGS.images:
        files = _image_files(FLAGS.images)
        paths = [os.path.join(FLAGS.images, f) for f in files]
        model = _load_model()
        kind, key, codebooks = model_index_layout(model, FLAGS.kind, FLAGS.model)
        codes, ids = images_for_index(paths, key, model, FLAGS.batch_size)
        source = {"images": FLAGS.images}
        fingerprint = export_fingerprint(FLAGS.model)  # None for a model file or an old export
        if fingerprint:
            source["model_fingerprint"] = fingerprint
    elif FLAGS.codes and is_codes_folder(FLAGS.codes):
        _build_from_folder(params)
        return
    elif FLAGS.codes:
        contents = read_codes_file(FLAGS.codes)
        split = _codes_split(contents, FLAGS.split or "database")
        ranked_as = scorer_kind(contents)  # the index that ranks as the file says
        kind = ranked_as.index_kind if FLAGS.kind == "auto" else FLAGS.kind
        if kind is None:
            raise cli.UsageError(
                f"{FLAGS.codes} holds {ranked_as.title} codes, which no index searches; "
                "pass --kind."
            )
        index_kind = INDEX_KINDS.get(kind)
        codes = getattr(split, index_kind.database_field)
        if index_kind.needs_codebooks:
            if contents.codebooks is None or codes is None:
                raise cli.UsageError(
                    f"--kind={kind}: {FLAGS.codes} has no codebooks/{index_kind.database_field}."
                )
            codebooks = contents.codebooks
        ids = split.ids if split.ids is not None else np.arange(len(codes))
        source = {"codes": os.path.abspath(FLAGS.codes), "split": FLAGS.split or "database"}
        if contents.model_fingerprint:
            source["model_fingerprint"] = contents.model_fingerprint
        if source["split"] == "database" and contents.database_codes == "learned":
            # The method learned these codes (ADSH's V): the service must not expect
            # the model to reproduce them from the images.
            source["database_codes"] = "learned"
    else:
        raise cli.UsageError("build needs --codes=FILE or --images=FOLDER --model=DIR.")
    smallest = _smallest_block_size(len(codes)) if len(codes) else None
    INDEX_KINDS.get(kind).check_params(params, np.asarray(codes).shape[1], smallest)
    manifest = build_index(
        FLAGS.output,
        _blocks(codes, np.asarray(ids)),
        kind=kind,
        params=params,
        codebooks=codebooks,
        metadata=source,
    )
    _print_built(manifest)


def _print_built(manifest: dict) -> None:
    print(
        f"{manifest['kind']} index of {manifest['num_items']} items in "
        f"{len(manifest['shards'])} shard(s) written to {FLAGS.output}"
    )


def _folder_kind(folder: str, manifest: dict) -> str:
    from wsdhash.eval.scorers import SCORERS

    if FLAGS.kind != "auto":
        return FLAGS.kind
    kind = SCORERS.get(manifest["scorer"]).index_kind
    if kind is None:
        raise cli.UsageError(f"{folder} holds codes no index searches; pass --kind.")
    return kind


def _build_from_folder(params) -> None:
    """`build --codes=FOLDER`: one codes shard at a time (module doc)."""
    from wsdhash.eval import codes_folder
    from wsdhash.index.sharded import build_index

    folder, split = FLAGS.codes, FLAGS.split or "database"
    if split not in ("query", "database"):
        raise cli.UsageError(f"--split must be query or database; got {split!r}.")
    manifest = codes_folder.read_manifest(folder)
    if split not in manifest["splits"]:
        raise cli.UsageError(f"--codes={folder} has no {split} split.")
    kind = _folder_kind(folder, manifest)
    index_kind = INDEX_KINDS.get(kind)
    codebooks = None
    if index_kind.needs_codebooks:
        codebooks = codes_folder.read_codebooks(folder, manifest)
        if codebooks is None:
            raise cli.UsageError(f"--kind={kind}: {folder} has no codebooks (binary codes).")
    counts = [s["num_items"] for s in manifest["splits"][split]["shards"] if s["num_items"]]
    total = sum(counts)
    smallest = (
        (total % FLAGS.shard_size or FLAGS.shard_size)
        if FLAGS.shard_size
        else min(counts, default=None)
    )
    width = -(-manifest["bits"] // 8) if index_kind.database_field == "codes" else None
    index_kind.check_params(params, width, smallest)
    print(
        f"building {'an' if kind[0] in 'aeiou' else 'a'} {kind} index of {total} items from {len(counts)} codes shard(s) "
        f"of {folder} ({split} split)"
    )
    source = {"codes": os.path.abspath(folder), "split": split}
    if manifest["model_fingerprint"]:
        source["model_fingerprint"] = manifest["model_fingerprint"]
    shards = codes_folder.iter_shards(folder, split, manifest)
    blocks = codes_folder.shard_blocks(shards, index_kind.database_field, FLAGS.shard_size)
    built = build_index(
        FLAGS.output, blocks, kind=kind, params=params, codebooks=codebooks, metadata=source
    )
    _print_built(built)


def query():
    from wsdhash.eval import read_codes_file
    from wsdhash.index.fit import check_codes_fit_index, check_model_fits_index
    from wsdhash.index.sharded import ShardedIndex
    from wsdhash.model_fingerprint import export_fingerprint

    if not FLAGS.index:
        raise cli.UsageError("query needs --index (an index directory).")
    index = ShardedIndex(FLAGS.index)
    index_name = f"--index={FLAGS.index}"
    if FLAGS.images:
        names = [p for p in FLAGS.images.split(",") if p]
        for name in names:
            if not os.path.isfile(name):
                raise cli.UsageError(f"--images: {name} does not exist.")
        model = _load_model()
        check_model_fits_index(
            model, export_fingerprint(FLAGS.model), index, index_name, f"--model={FLAGS.model}"
        )
        key = INDEX_KINDS.get(index.kind).query_output
        queries = images_for_query(names, key, model, FLAGS.batch_size)
    elif FLAGS.codes:
        if is_codes_folder(FLAGS.codes):
            contents = _folder_queries(FLAGS.codes, FLAGS.split or "query", FLAGS.num_queries)
        else:
            contents = read_codes_file(FLAGS.codes)
        check_codes_fit_index(contents, index, index_name, f"--codes={FLAGS.codes}")
        split = _codes_split(contents, FLAGS.split or "query")
        field = INDEX_KINDS.get(index.kind).query_field
        queries = getattr(split, field)
        if queries is None:
            raise cli.UsageError(f"{FLAGS.codes}: no query {field} for an {index.kind} index.")
        count = FLAGS.num_queries or len(queries)
        queries = queries[:count]
        names = list(split.ids[:count]) if split.ids is not None else list(map(str, range(count)))
    else:
        raise cli.UsageError("query needs --codes=FILE or --images=a.jpg,... --model=DIR.")
    result = index.search(queries, FLAGS.k)
    output = []
    for q, name in enumerate(names):
        rows = []
        for rank, (distance, position) in enumerate(
            zip(result.distances[q], result.positions[q], strict=True), start=1
        ):
            if position < 0:
                break
            rows.append(
                {
                    "rank": rank,
                    "position": int(position),
                    "id": str(index.ids[position]),
                    "distance": float(distance),
                }
            )
        output.append({"query": str(name), "results": rows})
    if FLAGS.json:
        json.dump(output, sys.stdout, indent=1)
        print()
        return
    for entry in output:
        print(f"query {entry['query']}")
        for row in entry["results"]:
            print(
                f"  {row['rank']:>4}  {row['distance']:>10.4g}  {row['position']:>9}  {row['id']}"
            )


def _folder_queries(folder: str, split: str, count: int):
    """The first `count` (0: all) items of a codes folder's `split`, as the parts of a
    codes file that a query reads (codes, features, ids; model fingerprint,
    codebooks). Reads shards until it has them."""
    import types

    import numpy as np

    from wsdhash.eval import codes_folder

    if split not in ("query", "database"):
        raise cli.UsageError(f"--split must be query or database; got {split!r}.")
    manifest = codes_folder.read_manifest(folder)
    parts, held = [], 0
    for arrays in codes_folder.iter_shards(folder, split, manifest):
        parts.append(arrays)
        held += len(arrays["ids"])
        if count and held >= count:
            break

    def stacked(name):
        found = [part[name] for part in parts if name in part]
        return np.concatenate(found)[: count or None] if found else None

    rows = types.SimpleNamespace(
        codes=stacked("codes"), features=stacked("features"), indices=stacked("indices")
    )
    ids = stacked("ids")
    rows.ids = ids.astype(str) if ids is not None else None
    if rows.codes is None:
        rows.codes = np.zeros((0, -(-manifest["bits"] // 8)), np.uint8)
    return types.SimpleNamespace(
        bits=manifest["bits"],
        model_fingerprint=manifest["model_fingerprint"],
        codebooks=codes_folder.read_codebooks(folder, manifest),
        query=rows,
        database=rows,
    )


def main(argv):
    if len(argv) != 2 or argv[1] not in ("build", "query"):
        raise cli.UsageError("Usage: python -m wsdhash.search build|query --flags (see --help).")
    from wsdhash.file_lock import LockedError
    from wsdhash.index.binary import IndexParamError
    from wsdhash.index.fit import MismatchError
    from wsdhash.index.index_file import IndexFileError

    try:
        if argv[1] == "build":
            build()
        else:
            query()
    except cli.UsageError:
        raise
    except IndexParamError as error:  # its name is the flag's
        raise cli.UsageError(f"--{error.name}={error.value}: {error.problem}") from None
    except MismatchError as error:  # codes or a model of another network than the index's
        raise cli.UsageError(str(error)) from None
    except (IndexFileError, FileNotFoundError, ValueError, LockedError) as error:
        # A missing, damaged or busy index or codes file: one line, exit status 1.
        raise cli.UsageError(str(error), exitcode=cli.EXIT_ERROR) from None
    return 0


def run():
    cli.run(main, "wsdhash.search")


if __name__ == "__main__":
    run()
