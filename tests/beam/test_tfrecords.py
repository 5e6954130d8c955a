"""TFRecord shards: `python -m wsdhash.pipeline tfrecords` on the DirectRunner, every
field of every record against the list files, the manifest's checks, and training
from shards against training from files."""

import hashlib
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("apache_beam", reason="needs the beam extra: pip install -e '.[beam]'")

import tensorflow as tf

from wsdhash.data import datasets, list_files
from wsdhash.data import tfrecords as records_lib

SIZES = (160, 30, 80)
IMAGE_SIZE = 32
OPTIONS = {
    "seed": 0,
    "image_size": IMAGE_SIZE,
    "num_train": SIZES[0],
    "num_query": SIZES[1],
    "num_database": SIZES[2],
}
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")


def _write_command(data_dir, output, *extra):
    return [
        sys.executable,
        "-m",
        "wsdhash.pipeline",
        "tfrecords",
        f"--data_dir={data_dir}",
        f"--builtin_sizes={','.join(map(str, SIZES))}",
        f"--builtin_image_size={IMAGE_SIZE}",
        f"--tfrecords_dir={output}",
        "--records_per_shard=50",
        "--runner=DirectRunner",
        *extra,
    ]


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """The built-in dataset and its shards, written by the command on the DirectRunner."""
    root = tmp_path_factory.mktemp("tfrecords")
    data_dir, output = root / "builtin", root / "shards"
    result = subprocess.run(
        _write_command(data_dir, output),
        check=False,
        capture_output=True,
        text=True,
        env=ENV,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "train: 160 records in 4 shards" in result.stdout
    return str(data_dir), str(output), result.stdout


def _sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _parse(record, entry):
    return records_lib.parse_example(record, entry["num_labels"], entry["num_tags"])


def test_every_record_holds_its_image_labels_and_tags(shards):
    data_dir, output, _ = shards
    manifest = records_lib.read_manifest(output)
    assert manifest["source"] == {"dataset": "builtin", "data_dir": data_dir, "options": OPTIONS}
    for name in ("train", "query", "database"):
        # The list files read directly, not through the dataset the writer used.
        split = list_files.read_wsdhq_split(data_dir, data_dir, split=name)
        entry = manifest["splits"][name]
        assert entry["num_items"] == len(split)
        files = [os.path.join(output, shard["file"]) for shard in entry["shards"]]
        records = {}
        for record in tf.data.TFRecordDataset(files):  # TensorFlow's own reader
            fields = _parse(record, entry)
            records[int(fields["index"])] = fields
        assert sorted(records) == list(range(len(split)))
        images = records_lib.ShardedImages(output, entry)
        for i, fields in records.items():
            with open(split.paths[i], "rb") as f:
                image = f.read()
            assert fields["image"].numpy() == image  # the file's bytes, as on disk
            assert images.read(i) == image  # and at its recorded location
            assert fields["split"].numpy().decode() == name
            assert fields["path"].numpy().decode() == split.paths[i]
            np.testing.assert_array_equal(fields["labels"].numpy(), split.labels[i])
            np.testing.assert_array_equal(fields["tags"].numpy(), split.tags[i])
        images.close()


def test_each_item_is_in_its_hashed_shard_once_and_in_index_order(shards):
    _, output, _ = shards
    manifest = records_lib.read_manifest(output)
    for name, entry in manifest["splits"].items():
        num_shards = entry["num_shards"]
        seen = []
        for shard in entry["shards"]:
            path = os.path.join(output, shard["file"])
            assert _sha256(path) == shard["sha256"]
            assert os.path.getsize(path) == shard["num_bytes"]
            indices = [
                int(_parse(record, entry)["index"]) for record in tf.data.TFRecordDataset(path)
            ]
            assert len(indices) == shard["num_items"] and indices == sorted(indices)
            number = int(shard["file"].split("-")[-3])
            for index in indices:  # SHA-256 of "split/index", first 8 bytes, mod shards
                digest = hashlib.sha256(f"{name}/{index}".encode()).digest()
                assert int.from_bytes(digest[:8], "big") % num_shards == number
            seen += indices
        assert sorted(seen) == list(range(entry["num_items"]))


def test_a_damaged_shard_is_refused_naming_it(shards, tmp_path):
    data_dir, output, _ = shards
    damaged = tmp_path / "shards"
    shutil.copytree(output, damaged)
    split = datasets.get_dataset("builtin", data_dir, **OPTIONS).split("train")
    entry = records_lib.read_manifest(str(damaged))["splits"]["train"]
    target = damaged / entry["shards"][1]["file"]
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 1  # one bit, same size
    target.write_bytes(bytes(data))
    with pytest.raises(records_lib.TFRecordsError) as error:
        records_lib.open_split(str(damaged), split)
    assert str(target) in str(error.value) and "SHA-256" in str(error.value)
    assert "\n" not in str(error.value)
    target.write_bytes(bytes(data[:-10]))  # truncated: found by size, without hashing
    with pytest.raises(records_lib.TFRecordsError, match="truncated"):
        records_lib.open_split(str(damaged), split, checksums=False)


def test_shards_of_other_list_files_are_refused(shards):
    data_dir, output, _ = shards
    split = datasets.get_dataset("builtin", data_dir, **OPTIONS).split("train")
    labels = split.labels.copy()
    labels[3] = 1 - labels[3]
    changed = type(split)(split.name, split.paths, labels, split.tags)
    with pytest.raises(records_lib.TFRecordsError, match="differ from the dataset's list"):
        records_lib.open_split(output, changed)


def test_rewriting_replaces_the_output_whole(shards, tmp_path):
    """A second run over an existing output replaces it (same bytes: shards do not
    depend on the run), leaving no temporary folder; a folder of other files is kept."""
    from wsdhash.beam import tfrecords as beam_tfrecords

    data_dir, output, _ = shards
    copy = tmp_path / "shards"
    shutil.copytree(output, copy)
    (copy / "stale.tfrecord").write_bytes(b"old")

    def write(folder):
        return beam_tfrecords.write_tfrecords(
            str(folder),
            dataset="builtin",
            data_dir=data_dir,
            dataset_options=OPTIONS,
            splits=["query"],
            records_per_shard=50,
            pipeline_args=["--runner=DirectRunner"],
        )

    manifest = write(copy)
    assert sorted(os.listdir(tmp_path)) == ["shards"]
    assert records_lib.read_manifest(str(copy)) == manifest
    assert list(manifest["splits"]) == ["query"]
    assert not (copy / "stale.tfrecord").exists()
    original = records_lib.read_manifest(output)["splits"]["query"]
    assert manifest["splits"]["query"] == original
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(beam_tfrecords.DestinationError, match="holds no TFRecord shards"):
        write(other)
    assert (other / "keep.txt").read_text() == "mine"


def test_source_rows_match_a_taken_subset_with_repeated_paths():
    from wsdhash.data.types import SplitData

    paths = np.array(["a", "b", "a", "c", "b"])
    source = SplitData("train", paths, np.zeros((5, 0), np.uint8), np.zeros((5, 0), np.uint8))
    taken = [4, 0, 2, 3]
    np.testing.assert_array_equal(records_lib.source_rows(source, source.take(taken)), [1, 0, 2, 3])
    other = source.take([0, 0, 2])  # "a" three times: the source has it twice
    with pytest.raises(records_lib.TFRecordsError, match="not in the shards"):
        records_lib.source_rows(source, other)


# -----------------------------------------------------------------------------
# Training from shards
# -----------------------------------------------------------------------------


def _train_config(data_dir, workdir, **overrides):
    from wsdhash.training.config import config_from_dict

    values = {
        "dataset": "builtin",
        "data_dir": data_dir,
        "dataset_options": OPTIONS,
        "image_size": 32,
        "crop_size": 28,
        "validation_size": 32,
        "batch_size": 16,
        "bits": 16,
        "steps": 3,
        "log_every": 1,
        "checkpoint_every": 5,
        "workdir": str(workdir),
    }
    return config_from_dict({**values, **overrides})  # flat settings


def _logged_losses(workdir):
    losses = {}
    logs = os.path.join(workdir, "logs")
    for name in sorted(os.listdir(logs)):
        for event in tf.compat.v1.train.summary_iterator(os.path.join(logs, name)):
            for value in event.summary.value:
                if value.tag == "loss/loss":
                    losses[event.step] = float(tf.make_ndarray(value.tensor))
    return [losses[step] for step in sorted(losses)]


@pytest.fixture(scope="module")
def files_run(shards, tmp_path_factory):
    from wsdhash.training import trainer

    workdir = tmp_path_factory.mktemp("files_run")
    trainer.train(_train_config(shards[0], workdir))
    return workdir


def test_training_on_shards_gives_the_losses_of_files(shards, files_run, tmp_path):
    from wsdhash.eval.codes_file import read_codes_file
    from wsdhash.training import trainer

    data_dir, output, _ = shards
    trainer.train(_train_config(data_dir, tmp_path, data_format="tfrecord", tfrecords=output))
    expected = _logged_losses(files_run)
    assert len(expected) == 3
    assert _logged_losses(tmp_path) == expected  # exactly: the same batches, same crops
    ours, theirs = (read_codes_file(str(w / "codes.h5")) for w in (tmp_path, files_run))
    np.testing.assert_array_equal(ours.database.codes, theirs.database.codes)
    assert ours.model_fingerprint == theirs.model_fingerprint


def test_a_streamed_epoch_holds_every_training_item_once(shards):
    data_dir, output, _ = shards
    source = datasets.get_dataset("builtin", data_dir, **OPTIONS).split("train")
    _, images = records_lib.open_split(output, source)
    subset = source.take(np.arange(10, len(source), 2))  # as after a validation carve
    rows = records_lib.source_rows(source, subset)
    stream = records_lib.stream_records(images, subset, rows, seed=3, shuffle_buffer=16)
    elements = list(stream.take(2 * len(subset)).as_numpy_iterator())
    for epoch in (elements[: len(subset)], elements[len(subset) :]):
        indices = [int(e["index"]) for e in epoch]
        assert sorted(indices) == list(range(len(subset)))
        for element in epoch:
            i = int(element["index"])
            assert element["path"].decode() == subset.paths[i]
            np.testing.assert_array_equal(element["labels"], subset.labels[i])
            with open(subset.paths[i], "rb") as f:
                assert element["image_bytes"] == f.read()
    first = [int(e["index"]) for e in elements[: len(subset)]]
    assert first != sorted(first)  # shuffled


def test_runs_recorded_before_data_format_resume_with_files(tmp_path):
    from wsdhash.training import run_info

    config = _train_config("data/builtin", tmp_path)
    stored = run_info.json.loads(run_info.json.dumps(run_info.to_flat_dict(config)))
    del stored["data_format"], stored["tfrecords"]
    assert run_info.resume_differences(stored, config) == []
    shards = _train_config("data/builtin", tmp_path, data_format="tfrecord", tfrecords="/s")
    fields = {change.field for change in run_info.resume_differences(stored, shards)}
    assert fields == {"data_format", "tfrecords"}


def test_the_train_command_refuses_a_damaged_shard_in_one_line(shards, tmp_path):
    data_dir, output, _ = shards
    damaged = tmp_path / "shards"
    shutil.copytree(output, damaged)
    target = damaged / records_lib.read_manifest(output)["splits"]["train"]["shards"][0]["file"]
    data = bytearray(target.read_bytes())
    data[100] ^= 0xFF
    target.write_bytes(bytes(data))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "wsdhash.train",
            f"--data_dir={data_dir}",
            f"--workdir={tmp_path / 'run'}",
            "--builtin_sizes=160,30,80",
            "--builtin_image_size=32",
            "--image_size=32",
            "--crop_size=28",
            "--steps=2",
            "--validation_size=32",
            "--batch_size=16",
            f"--tfrecords={damaged}",
        ],
        check=False,
        capture_output=True,
        text=True,
        env=ENV,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("wsdhash.train")]
    assert len(lines) == 1 and str(target) in lines[0] and "SHA-256" in lines[0], result.stderr


@pytest.mark.slow
def test_multi_processing_workers_write_the_same_shards(shards, tmp_path):
    data_dir, output, _ = shards
    result = subprocess.run(
        _write_command(
            data_dir,
            tmp_path / "shards",
            "--direct_num_workers=2",
            "--direct_running_mode=multi_processing",
        ),
        check=False,
        capture_output=True,
        text=True,
        env=ENV,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    ours = records_lib.read_manifest(str(tmp_path / "shards"))["splits"]
    assert ours == records_lib.read_manifest(output)["splits"]


@pytest.mark.slow
def test_a_killed_run_leaves_the_old_output_and_a_rerun_completes(shards, tmp_path):
    import signal
    import time

    data_dir, output, _ = shards
    target = tmp_path / "shards"
    shutil.copytree(output, target)
    before = records_lib.read_manifest(str(target))
    process = subprocess.Popen(
        _write_command(data_dir, target, "--splits=train", "--records_per_shard=20"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=ENV,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    building = []
    while not building and process.poll() is None and time.monotonic() < deadline:
        building = [p for p in os.listdir(tmp_path) if p.endswith(".building")]
        time.sleep(0.05)
    assert building, "the run ended before it began to build"
    time.sleep(1.0)  # mid-pipeline: the workers are reading and writing
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert records_lib.read_manifest(str(target)) == before  # the old output, whole
    result = subprocess.run(
        _write_command(data_dir, target, "--splits=train", "--records_per_shard=20"),
        check=False,
        capture_output=True,
        text=True,
        env=ENV,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(os.listdir(tmp_path)) == ["shards"]  # the killed run's folder is gone
    manifest = records_lib.read_manifest(str(target))
    assert list(manifest["splits"]) == ["train"] and len(manifest["splits"]["train"]["shards"]) == 8
    source = datasets.get_dataset("builtin", data_dir, **OPTIONS).split("train")
    records_lib.open_split(str(target), source)  # every checksum and count holds
