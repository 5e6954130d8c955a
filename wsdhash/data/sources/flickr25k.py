"""MIRFLICKR-25K from its official download, in the HyP2 and the WSDHQ protocols.

Expected under `root` (the two official archives unpacked side by side):

    mirflickr/im1.jpg ... im25000.jpg          mirflickr25k.zip
    mirflickr/meta/tags/tags1.txt ...          (user tags, one per line; WSDHQ only)
    mirflickr25k_annotations_v080/<concept>.txt, <concept>_r1.txt
                                               (1-based image numbers, one per line)

The annotation folder may also be `root` itself or `mirflickr/annotations`.

* `hyp2` (docs/methods.md, "Dataset protocols"): 38 labels, the 24 "potential" concepts
  then the 14 `_r1` "relevant" ones (each group in alphabetical order; HyP2's own column
  order is not published, and mAP does not depend on it). Images with at least one label
  (24,581) are permuted with the seed: query = first 1,000, train = next 4,000, database
  = the rest (19,581, disjoint from train), R = 1,000. HyP2's own `img.txt`,
  `targets.txt` and `flickr.txt` (the permutation) are used instead when they are in
  `root`.
* `wsdhq`: user tags as training signal, the 24 potential concepts as ground truth.
  The original split files are not published (docs/methods.md, "Dataset protocols"),
  so wsdhash defines one: images with at least one of the 24 concepts, query = 2,000 seeded
  images, database = the rest, train = 18,500 seeded images of the database (the logs
  put N_train in [18,433, 18,688]). The tag vocabulary is `--tag_vocab` (MIRFlickr's
  common-tag list, 1,386 tags in WSDHQ) when given, else every tag on at least
  `min_tag_count` training images. R = 5,000, AQD.
"""

from __future__ import annotations

import json
import os

import numpy as np

from wsdhash.data import list_files, protocols
from wsdhash.data.dataset_spec import DatasetSpec, register
from wsdhash.data.list_datasets import prepared_lists
from wsdhash.data.sources import splits as splits_lib
from wsdhash.data.types import DataFormatError

POTENTIAL = (
    "animals",
    "baby",
    "bird",
    "car",
    "clouds",
    "dog",
    "female",
    "flower",
    "food",
    "indoor",
    "lake",
    "male",
    "night",
    "people",
    "plant_life",
    "portrait",
    "river",
    "sea",
    "sky",
    "structures",
    "sunset",
    "transport",
    "tree",
    "water",
)
RELEVANT = (
    "baby_r1",
    "bird_r1",
    "car_r1",
    "clouds_r1",
    "dog_r1",
    "female_r1",
    "flower_r1",
    "male_r1",
    "night_r1",
    "people_r1",
    "portrait_r1",
    "river_r1",
    "sea_r1",
    "tree_r1",
)
NUM_IMAGES = 25000
WHERE_TO_GET = (
    "Download mirflickr25k.zip and mirflickr25k_annotations_v080.zip from "
    "https://press.liacs.nl/mirflickr/mirdownload.html and unpack both into --root."
)


def _annotation_dir(root: str) -> str:
    for candidate in (
        os.path.join(root, "mirflickr25k_annotations_v080"),
        os.path.join(root, "mirflickr", "annotations"),
        root,
    ):
        if os.path.isfile(os.path.join(candidate, f"{POTENTIAL[0]}.txt")):
            return candidate
    raise protocols.MissingDownloadError(
        f"flickr25k: no annotation files (e.g. {POTENTIAL[0]}.txt) under {root!r}. " + WHERE_TO_GET
    )


def read_annotations(root: str, concepts, num_images: int = NUM_IMAGES) -> np.ndarray:
    """(num_images, len(concepts)) 0/1 labels from the per-concept image-number files."""
    folder = _annotation_dir(root)
    labels = np.zeros((num_images, len(concepts)), np.uint8)
    for column, concept in enumerate(concepts):
        path = os.path.join(folder, f"{concept}.txt")
        if not os.path.isfile(path):
            raise protocols.MissingDownloadError(
                f"flickr25k: annotation file {path} is missing. {WHERE_TO_GET}"
            )
        with open(path, encoding="utf-8") as f:
            for line_number, line in enumerate(f, start=1):
                text = line.strip()
                if not text:
                    continue
                if not text.isdigit() or not 1 <= int(text) <= num_images:
                    raise DataFormatError(
                        f"{path}:{line_number}: expected an image number in 1..{num_images}, "
                        f"found {text!r}."
                    )
                labels[int(text) - 1, column] = 1
    return labels


def _image_names(num_images: int) -> np.ndarray:
    return np.array([f"mirflickr/im{i}.jpg" for i in range(1, num_images + 1)])


def read_tags(root: str, num_images: int = NUM_IMAGES) -> list[list[str]]:
    """Each image's user tags (lower case, unique, file order) from meta/tags."""
    folder = os.path.join(root, "mirflickr", "meta", "tags")
    if not os.path.isdir(folder):
        raise protocols.MissingDownloadError(
            f"flickr25k: the user tags folder {folder} is missing. {WHERE_TO_GET}"
        )
    tags = []
    for i in range(1, num_images + 1):
        path = os.path.join(folder, f"tags{i}.txt")
        if not os.path.isfile(path):
            raise protocols.MissingDownloadError(f"flickr25k: {path} is missing. {WHERE_TO_GET}")
        with open(path, encoding="utf-8", errors="replace") as f:
            words = [w.strip().lower() for w in f if w.strip()]
        tags.append(list(dict.fromkeys(words)))
    return tags


def _hyp2_files(root: str):
    names = [os.path.join(root, n) for n in ("img.txt", "targets.txt", "flickr.txt")]
    return names if all(os.path.isfile(n) for n in names) else None


def _hyp2_split(
    root: str, names: np.ndarray, num_images: int, num_query: int, num_train: int, seed: int
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray], list[str]]:
    """(image names, labels, split -> indices, notes) of the `hyp2` protocol: HyP2's own
    files when they are in `root`, else a seeded split of the labelled ones of `names`."""
    hyp2 = _hyp2_files(root)
    if hyp2:
        keep, labels, order = _read_hyp2_files(*hyp2)
        names = np.array([f"mirflickr/{n}" for n in keep])
        splits = {
            "query": order[:num_query],
            "train": order[num_query : num_query + num_train],
            "database": order[num_query + num_train :],
        }
        return names, labels, splits, ["split from HyP2's img.txt, targets.txt and flickr.txt"]
    labels = read_annotations(root, POTENTIAL + RELEVANT, num_images)
    labelled = np.flatnonzero(labels.any(axis=1))
    notes = [
        f"{num_images - len(labelled)} images have none of the 38 labels and are "
        "not used, as in HyP2"
    ]
    names, labels = names[labelled], labels[labelled]
    query, train, database = splits_lib.permutation_blocks(len(names), (num_query, num_train), seed)
    return names, labels, {"query": query, "train": train, "database": database}, notes


def _prepare_hyp2(
    root: str,
    output_dir: str,
    names: np.ndarray,
    manifest: dict,
    *,
    seed: int,
    num_images: int,
    num_query: int | None,
    num_train: int | None,
) -> protocols.Prepared:
    """Writes the `hyp2` lists (module doc) and returns what they must satisfy."""
    num_query = 1000 if num_query is None else num_query
    num_train = 4000 if num_train is None else num_train
    label_names = POTENTIAL + RELEVANT
    names, labels, splits, notes = _hyp2_split(root, names, num_images, num_query, num_train, seed)
    splits_lib.write_hashnet_splits(
        output_dir, names, labels, splits, {**manifest, "label_names": list(label_names)}
    )
    protocol_counts = {
        "query": num_query,
        "train": num_train,
        "database": len(names) - num_query - num_train,
    }
    return protocols.Prepared(
        "flickr25k",
        {},
        protocols.Protocol(
            counts=protocol_counts,
            disjoint=(("query", "train"), ("query", "database"), ("train", "database")),
            num_classes=len(label_names),
            topk=1000,
        ),
        tuple(notes),
    )


def _wsdhq_split(
    num_items: int, num_query: int, num_train: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(query, train, database) indices of the `wsdhq` protocol: seeded queries, the
    database the rest, and seeded training items drawn from the database."""
    query, database = splits_lib.permutation_blocks(num_items, (num_query,), seed)
    if num_train > len(database):
        raise ValueError(
            f"flickr25k: {num_train} training images asked, database has {len(database)}."
        )
    train = np.sort(np.random.default_rng(seed + 1).choice(database, num_train, replace=False))
    return query, train, database


def _tag_vocabulary(
    tags: list[list[str]], train: np.ndarray, tag_vocab: str | None, min_tag_count: int
) -> tuple[list[str], list[str]]:
    """(vocabulary, notes): the `tag_vocab` file's tags, else every tag on at least
    `min_tag_count` training images."""
    if tag_vocab:
        vocabulary = list_files.read_name_list(tag_vocab)
        return [w.lower() for w in vocabulary], []
    counts: dict[str, int] = {}
    for i in train:
        for word in tags[i]:
            counts[word] = counts.get(word, 0) + 1
    vocabulary = sorted(w for w, c in counts.items() if c >= min_tag_count)
    return vocabulary, [
        f"tag vocabulary: {len(vocabulary)} tags on >= {min_tag_count} train images"
    ]


def _tag_matrix(tags: list[list[str]], vocabulary: list[str]) -> np.ndarray:
    """(images, vocabulary) 0/1 matrix of each image's tags that are in the vocabulary."""
    column = {w: j for j, w in enumerate(vocabulary)}
    matrix = np.zeros((len(tags), len(vocabulary)), np.uint8)
    for i, words in enumerate(tags):
        matrix[i, [column[w] for w in words if w in column]] = 1
    return matrix


def _prepare_wsdhq(
    root: str,
    output_dir: str,
    names: np.ndarray,
    manifest: dict,
    *,
    seed: int,
    num_images: int,
    num_query: int | None,
    num_train: int | None,
    tag_vocab: str | None,
    min_tag_count: int,
) -> protocols.Prepared:
    """Writes the `wsdhq` lists (module doc) and returns what they must satisfy."""
    num_query = 2000 if num_query is None else num_query
    num_train = 18500 if num_train is None else num_train
    labels = read_annotations(root, POTENTIAL, num_images)
    labelled = np.flatnonzero(labels.any(axis=1))
    notes = [f"{num_images - len(labelled)} images have none of the 24 concepts; not used"]
    all_tags = read_tags(root, num_images)
    names, labels = names[labelled], labels[labelled]
    tags = [all_tags[i] for i in labelled]
    query, train, database = _wsdhq_split(len(names), num_query, num_train, seed)
    vocabulary, vocabulary_notes = _tag_vocabulary(tags, train, tag_vocab, min_tag_count)
    notes += vocabulary_notes
    matrix = _tag_matrix(tags, vocabulary)
    untagged = int(np.sum(matrix[train].sum(axis=1) == 0))
    notes.append(f"{untagged} training images have no vocabulary tag (kept, as WSDHQ does)")
    splits = {"query": query, "train": train, "database": np.sort(database)}
    splits_lib.write_wsdhq_splits(
        output_dir,
        names,
        labels,
        matrix,
        vocabulary,
        splits,
        {**manifest, "label_names": list(POTENTIAL)},
    )
    return protocols.Prepared(
        "flickr25k",
        {},
        protocols.Protocol(
            counts={"query": num_query, "train": num_train, "database": len(database)},
            disjoint=(("query", "database"), ("query", "train")),
            contained=(("train", "database"),),
            num_classes=len(POTENTIAL),
            topk=5000,
        ),
        tuple(notes),
    )


def prepare(
    root: str,
    output_dir: str,
    *,
    seed: int = 0,
    protocol: str = "hyp2",
    num_images: int = NUM_IMAGES,
    num_query: int | None = None,
    num_train: int | None = None,
    tag_vocab: str | None = None,
    min_tag_count: int = 20,
) -> protocols.Prepared:
    """Builds the `hyp2` or `wsdhq` lists (module doc) in `output_dir`.

    Args:
        root: the unpacked download.
        output_dir: where lists and manifest go.
        seed: seeds the split.
        protocol: "hyp2" or "wsdhq".
        num_images: images in the download (25,000; smaller for test fixtures).
        num_query, num_train: split sizes (default: the protocol's).
        tag_vocab: WSDHQ: a vocabulary file (one tag per line).
        min_tag_count: WSDHQ without `tag_vocab`: keep tags on this many training images.
    """
    if protocol not in ("hyp2", "wsdhq"):
        raise ValueError(f"flickr25k: protocol must be 'hyp2' or 'wsdhq'; got {protocol!r}.")
    protocols.require_files(root, ["mirflickr"], "flickr25k", WHERE_TO_GET)
    names = _image_names(num_images)
    manifest = {
        "dataset": "flickr25k",
        "protocol": protocol,
        "image_root": os.path.abspath(root),
        "seed": seed,
    }
    sizes = {"num_images": num_images, "num_query": num_query, "num_train": num_train}
    if protocol == "hyp2":
        return _prepare_hyp2(root, output_dir, names, manifest, seed=seed, **sizes)
    return _prepare_wsdhq(
        root,
        output_dir,
        names,
        manifest,
        seed=seed,
        tag_vocab=tag_vocab,
        min_tag_count=min_tag_count,
        **sizes,
    )


def _read_hyp2_files(img_path: str, targets_path: str, order_path: str):
    """HyP2's own lists: file names, (N, 38) targets and the JSON permutation."""
    image_names = list_files.read_path_list(img_path)
    rows = []
    with open(targets_path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            values = line.split()
            if len(values) != 38 or any(v not in ("0", "1") for v in values):
                raise DataFormatError(
                    f"{targets_path}:{number}: expected 38 values 0/1, found {line.strip()!r}."
                )
            rows.append([int(v) for v in values])
    if len(rows) != len(image_names):
        raise DataFormatError(
            f"{targets_path}: {len(rows)} rows but {img_path} lists {len(image_names)} images."
        )
    with open(order_path, encoding="utf-8") as f:
        try:
            order = np.asarray(json.load(f), np.int64)
        except json.JSONDecodeError as error:
            raise DataFormatError(f"{order_path}: not a JSON list ({error}).") from None
    if sorted(order.tolist()) != list(range(len(image_names))):
        raise DataFormatError(f"{order_path}: not a permutation of 0..{len(image_names) - 1}.")
    return image_names, np.asarray(rows, np.uint8), order


def _output_folder(protocol: str) -> str:
    return os.path.join("data", "flickr25k", protocol)


SPEC = register(
    DatasetSpec(
        "flickr25k",
        prepared_lists("flickr25k", topk=1000, protocols={"wsdhq": 5000}),
        prepare,
        default_protocol="hyp2",
        output_folder=_output_folder,
        prepare_root=("unpacked MIRFLICKR-25K + annotations",),
        prepare_protocol="hyp2 (default), wsdhq",
    )
)
