"""`python -m wsdhash.pipeline encode` on the DirectRunner (Beam's FnApiRunner): the
codes folder holds, id for id and bit for bit, the codes that `search build --images`
computes with the same export (`encode_images`), for binary and WSDHQ (AQD) exports,
in-process and on two worker processes; unreadable and invalid images become dead
letters with their reasons and every other image is encoded; a run killed with
SIGKILL and then re-run leaves one complete folder; Beam options pass through and bad
flags are one-line errors."""

import functools
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

pytest.importorskip("apache_beam", reason="the Beam pipeline needs the beam extra")

from wsdhash.beam import encode, runner
from wsdhash.data import list_files
from wsdhash.eval import codes_folder
from wsdhash.index.images import encode_images
from wsdhash.model_fingerprint import export_fingerprint

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILTIN_FLAGS = ["--builtin_sizes=8,10,30", "--builtin_image_size=32"]


@functools.cache
def _saved_model(path):
    import tensorflow as tf

    return tf.saved_model.load(path)


def _reference(paths, model_dir, key):
    """{path: row} of `search build --images`'s code path, and its invalid items."""
    rows, invalid = encode_images(list(paths), key, _saved_model(model_dir), batch_size=7)
    valid = [path for path in paths if path not in invalid]
    assert len(rows) == len(valid)
    return dict(zip(valid, rows, strict=True)), invalid


def _folder(folder, split):
    """{id: {array: row}} of a split, checking the sharding invariants on the way."""
    manifest = codes_folder.read_manifest(folder)
    entries = manifest["splits"][split]["shards"]
    rows = {}
    for entry, arrays in zip(
        entries, codes_folder.iter_shards(folder, split, manifest), strict=True
    ):
        ids = [str(i) for i in arrays["ids"]]
        assert ids == sorted(ids), entry["file"]
        for i, item in enumerate(ids):
            number = int(entry["file"].split("-")[1])
            assert encode.stable_shard(item, len(entries)) == number, (item, entry["file"])
            assert item not in rows
            rows[item] = {name: array[i] for name, array in arrays.items() if name != "ids"}
    return rows


def _in_process(output, model_dir, beam_args=(), **job):
    options = runner.pipeline_options(list(beam_args))
    layout = encode.model_layout(_saved_model(model_dir), model_dir)
    return encode.encode_to_folder(
        encode.EncodeJob(output=str(output), model_dir=model_dir, **job), layout, options
    )


def _dataset_splits(data_dir):
    return {
        split: list_files.read_wsdhq_split(data_dir, data_dir, split=split)
        for split in ("query", "database")
    }


def _check_wsdhq_folder(folder, model_dir, splits):
    """AQD codes, query embeddings, labels and codebooks against the reference."""
    manifest = codes_folder.read_manifest(folder)
    assert (manifest["scorer"], manifest["bits"]) == ("aqd", 16)
    assert manifest["num_classes"] == splits["query"].labels.shape[1]
    assert manifest["model_fingerprint"] == export_fingerprint(model_dir)
    codebooks = codes_folder.read_codebooks(folder, manifest)
    expected_books = _saved_model(model_dir).quantization_encoder.codebooks_additive.numpy()
    np.testing.assert_array_equal(codebooks, expected_books)
    for split, data in splits.items():
        paths = [str(p) for p in data.paths]
        indices, invalid = _reference(paths, model_dir, "quantization_codes")
        assert not invalid
        got = _folder(folder, split)
        assert set(got) == set(paths)
        labels = dict(zip(paths, data.labels, strict=True))
        for path in paths:
            np.testing.assert_array_equal(got[path]["indices"], indices[path])
            np.testing.assert_array_equal(got[path]["codes"], indices[path])
            np.testing.assert_array_equal(got[path]["labels"], labels[path])
        if split == "query":
            embedding, _ = _reference(paths, model_dir, "embedding")
            for path in paths:
                np.testing.assert_array_equal(got[path]["features"], embedding[path])
        else:
            assert all("features" not in row for row in got.values())
    # The whole folder reads as an evaluable codes file.
    contents = codes_folder.read_codes_folder(folder)
    assert contents.query.features.shape == (len(splits["query"].paths), 24)


def _image_files(folder):
    return sorted(os.path.join(folder, name) for name in os.listdir(folder))


def test_binary_codes_through_an_object_store_equal_search_build_images(beam_files, tmp_path):
    """In-process, the way a remote runner works (gs://, s3://): images matched in a
    bucket, the export copied from it, shards staged in it and copied back."""
    import object_store

    object_store.ROOT[0] = str(tmp_path / "bucket")
    images = object_store.put_folder(beam_files["images"], "b/photos")
    model = object_store.put_folder(beam_files["binary"], "b/model")
    local = encode.local_model_dir(model)
    assert local != model and os.path.isfile(os.path.join(local, "saved_model.pb"))
    layout = encode.model_layout(_saved_model(local), local)
    shutil.rmtree(local)
    output = tmp_path / "out" / "codes"
    job = encode.EncodeJob(
        output=str(output),
        model_dir=model,
        images=f"{images}/*.png",
        staging_dir="store://b/tmp",
        num_shards=3,
        batch_size=8,
    )
    manifest = encode.encode_to_folder(job, layout, runner.pipeline_options([]))
    assert (manifest["scorer"], manifest["bits"], manifest["num_classes"]) == ("hamming", 16, None)
    assert manifest["model_fingerprint"] == export_fingerprint(beam_files["binary"])
    assert [e["file"] for e in manifest["splits"]["database"]["shards"]] == [
        codes_folder.shard_name("database", n, 3) for n in range(3)
    ]
    assert manifest["failed"]["num_items"] == 0
    paths = _image_files(beam_files["images"])
    expected, invalid = _reference(paths, beam_files["binary"], "packed_codes")
    assert not invalid
    got = _folder(str(output), "database")
    names = {f"{images}/{os.path.basename(path)}": path for path in paths}
    assert set(got) == set(names)
    for item, row in got.items():
        np.testing.assert_array_equal(row["codes"], expected[names[item]])
    assert os.listdir(tmp_path / "out") == ["codes"]  # no lock, no temporary folder
    # The staged objects were removed (an object store has no folder left to remove).
    staged = [name for _, _, files in os.walk(tmp_path / "bucket" / "b" / "tmp") for name in files]
    assert staged == []


def test_wsdhq_dataset_in_process_with_an_unreadable_image(beam_files, tmp_path):
    splits = _dataset_splits(beam_files["data_dir"])
    missing = os.path.join(beam_files["images"], "gone.png")
    items = [*encode.dataset_items(splits), encode.Item("database", missing, missing, b"\0" * 16)]
    output = tmp_path / "codes"
    _in_process(output, beam_files["wsdhq"], items=items, num_classes=16)
    _check_wsdhq_folder(str(output), beam_files["wsdhq"], splits)
    manifest = codes_folder.read_manifest(str(output))
    [failure] = codes_folder.read_failed(str(output), manifest)
    assert failure["id"] == missing and failure["split"] == "database"
    assert failure["reason"].startswith("cannot be read")


def _jpeg(image):
    import cv2

    ok, data = cv2.imencode(".jpg", image)
    assert ok
    return data.tobytes()


def _png(image):
    import cv2

    ok, data = cv2.imencode(".png", image)
    assert ok
    return data.tobytes()


def test_bad_images_are_dead_letters_with_their_reasons(beam_files, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    good = {f"good{i}.jpg": _jpeg(rng.integers(0, 256, (32, 32, 3), np.uint8)) for i in range(3)}
    good["good.png"] = _png(rng.integers(0, 256, (30, 34, 3), np.uint8))
    bad = {
        "truncated.jpg": (
            good["good0.jpg"][: len(good["good0.jpg"]) // 2],
            "corrupt or truncated image",
        ),
        "text.jpg": (b"not an image, just text\n", "not a JPEG or PNG image"),
        "big.png": (
            _png(rng.integers(0, 256, (48, 48, 3), np.uint8)),  # 2304 > 1600 pixels
            "image larger than the pixel limit",
        ),
    }
    for name, data in {**good, **{name: data for name, (data, _) in bad.items()}}.items():
        (folder / name).write_bytes(data)
    output = tmp_path / "codes"
    manifest = _in_process(output, beam_files["binary"], images=str(folder / "*"), batch_size=4)
    failed = codes_folder.read_failed(str(output), manifest)
    reasons = {os.path.basename(f["id"]): f["reason"] for f in failed}
    assert reasons == {name: reason for name, (_, reason) in bad.items()}
    assert all(f["path"] == f["id"] and f["split"] == "database" for f in failed)
    # The reference agrees on which are invalid, and why; every good image is encoded.
    paths = _image_files(str(folder))
    expected, invalid = _reference(paths, beam_files["binary"], "packed_codes")
    assert {os.path.basename(p): why for p, why in invalid.items()} == reasons
    got = _folder(str(output), "database")
    assert sorted(os.path.basename(p) for p in got) == sorted(good)
    for path, row in got.items():
        np.testing.assert_array_equal(row["codes"], expected[path])


def test_pipeline_options_pass_through_and_the_direct_runner_is_the_fn_api_runner():
    options = runner.pipeline_options(
        [
            "--runner=DirectRunner",
            "--direct_num_workers",
            "2",
            "--direct_running_mode=multi_processing",
            "--job_name=x",
        ]
    )
    assert runner.describe(options) == "FnApiRunner (multi_processing, 2 workers)"
    assert runner.is_local(options)
    remote = runner.pipeline_options(["--runner=DataflowRunner", "--temp_location=gs://b/t"])
    assert not runner.is_local(remote) and runner.temp_location(remote) == "gs://b/t"
    with pytest.raises(ValueError, match="unknown flag --batchsize: neither"):
        runner.pipeline_options(["--batchsize=3"])
    with pytest.raises(ValueError, match="direct_running_mode: invalid choice"):
        runner.pipeline_options(["--direct_running_mode=bogus"])
    with pytest.raises(ValueError, match="unexpected argument 'extra'"):
        runner.pipeline_options(["--runner=DirectRunner", "extra"])


def _environment():
    from tensorflow.python.util import _pywrap_util_port

    # The pipeline's processes use the same kernels as this one (wsdhash/cli.py).
    onednn = "1" if _pywrap_util_port.IsMklEnabled() else "0"
    return dict(os.environ, PYTHONPATH=ROOT, TF_ENABLE_ONEDNN_OPTS=onednn, CUDA_VISIBLE_DEVICES="")


def _command(*args):
    return [sys.executable, "-m", "wsdhash.pipeline", "encode", *args]


def _run(*args):
    return subprocess.run(
        _command(*args),
        capture_output=True,
        text=True,
        env=_environment(),
        cwd=ROOT,
        check=False,
        timeout=600,
    )


@pytest.mark.parametrize("method", ["wsdhq", pytest.param("binary", marks=pytest.mark.slow)])
def test_two_worker_processes_give_the_same_codes(beam_files, tmp_path, method):
    output, log = tmp_path / "codes", tmp_path / "pipeline.log"
    if method == "wsdhq":
        source = [f"--data_dir={beam_files['data_dir']}", *BUILTIN_FLAGS, "--num_shards=2"]
    else:
        source = [f"--images={beam_files['images']}/*.png"]
    result = _run(
        f"--model={beam_files[method]}",
        f"--output={output}",
        *source,
        "--batch_size=5",
        f"--log_file={log}",
        "--direct_num_workers=2",
        "--direct_running_mode=multi_processing",
    )
    assert result.returncode == 0, result.stderr[-3000:] + log.read_text()[-3000:]
    assert "on FnApiRunner (multi_processing, 2 workers)" in result.stdout
    assert f"codes folder: {output}" in result.stdout and "failed: 0" in result.stdout
    # Beam took the options: two SDK worker processes ran (their logs are in the file,
    # not on the terminal).
    assert log.read_text().count('message: "Python sdk harness starting."') == 2
    assert "sdk harness" not in result.stderr
    if method == "wsdhq":
        _check_wsdhq_folder(
            str(output), beam_files["wsdhq"], _dataset_splits(beam_files["data_dir"])
        )
        return
    paths = _image_files(beam_files["images"])
    expected, _ = _reference(paths, beam_files["binary"], "packed_codes")
    got = _folder(str(output), "database")
    assert set(got) == set(paths)
    for path in paths:
        np.testing.assert_array_equal(got[path]["codes"], expected[path])


def _one_line_error(result, *fragments):
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("wsdhash.pipeline: error: "), lines
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_bad_flags_are_one_line_errors(beam_files, tmp_path):
    model = f"--model={beam_files['binary']}"
    out = f"--output={tmp_path / 'codes'}"
    _one_line_error(_run(model, out, "--num_shards=-1"), "--num_shards must be >= 0")
    _one_line_error(_run(model, out, "--batchsize=3"), "unknown flag --batchsize")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    _one_line_error(
        _run(model, f"--output={tmp_path / 'mine'}", f"--images={beam_files['images']}/*"),
        "is not a codes folder",
    )
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


@pytest.mark.slow
def test_a_killed_run_then_a_rerun_leave_one_complete_folder(beam_files, tmp_path):
    output, log = tmp_path / "codes", tmp_path / "log"
    _in_process(output, beam_files["binary"], images=f"{beam_files['images']}/*.png")
    old = codes_folder.read_manifest(str(output))
    source = [f"--data_dir={beam_files['data_dir']}", *BUILTIN_FLAGS, "--num_shards=4"]
    command = _command(
        f"--model={beam_files['wsdhq']}",
        f"--output={output}",
        *source,
        "--batch_size=1",
        f"--log_file={log}",
        "--direct_num_workers=2",
        "--direct_running_mode=multi_processing",
    )
    # Its own session, so that the pipeline's worker processes can be killed as well.
    process = subprocess.Popen(
        command,
        env=_environment(),
        cwd=ROOT,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def leftovers():
        return [name for name in os.listdir(tmp_path) if name.startswith(".codes.")]

    def workers_started():
        return log.exists() and "Python sdk harness starting" in log.read_text()

    deadline = time.monotonic() + 300
    while not (leftovers() and workers_started()) and time.monotonic() < deadline:
        assert process.poll() is None, "the run ended before it could be killed"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)  # kill -9 mid-pipeline: workers up, nothing written
    assert process.wait() == -signal.SIGKILL
    os.killpg(process.pid, signal.SIGKILL)  # the orphaned workers too
    # Readers still see the old folder, whole; the killed run's folder is left over.
    assert codes_folder.read_manifest(str(output)) == old
    assert list(codes_folder.iter_shards(str(output)))
    assert leftovers()
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        env=_environment(),
        cwd=ROOT,
        check=False,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(os.listdir(tmp_path)) == ["codes", "log"]  # no temporary folder, no lock
    _check_wsdhq_folder(str(output), beam_files["wsdhq"], _dataset_splits(beam_files["data_dir"]))
    manifest = codes_folder.read_manifest(str(output))
    listed = {e["file"] for part in manifest["splits"].values() for e in part["shards"]}
    listed |= {codes_folder.MANIFEST, codes_folder.FAILED_FILE, codes_folder.CODEBOOKS_FILE}
    assert set(os.listdir(output)) == listed  # nothing of the old binary folder


class _FailsWholeBatches:
    """A signature that fails any batch holding a file starting with b"bad" (an export
    without per-item validity), else marks b"odd" files invalid."""

    def __init__(self):
        self.signatures = {"serving_default": self}

    def __call__(self, images):
        import tensorflow as tf

        data = [bytes(b) for b in images.numpy()]
        if any(d.startswith(b"bad") for d in data):
            raise tf.errors.InvalidArgumentError(None, None, "jpeg: premature end of data")
        valid = np.array([not d.startswith(b"odd") for d in data])
        codes = np.array([[d[-1]] for d in data], np.uint8) * valid[:, None]
        return {
            "valid": tf.constant(valid),
            "status": tf.constant(np.where(valid, 0, 1)),
            "packed_codes": tf.constant(codes),
        }


def test_a_batch_the_model_fails_is_retried_item_by_item_as_search_build_does(tmp_path):
    contents = [b"ok1", b"bad-truncated", b"odd", b"ok2"]
    paths = []
    for i, data in enumerate(contents):
        paths.append(str(tmp_path / f"{i}.jpg"))
        (tmp_path / f"{i}.jpg").write_bytes(data)
    model = _FailsWholeBatches()
    results = encode.serve_batch(model, contents, ["packed_codes"])
    rows, invalid = encode_images(paths, "packed_codes", model, batch_size=4)
    assert [reason for reason, _ in results] == [invalid.get(path) for path in paths]
    assert invalid[paths[1]].startswith("the model cannot decode it (")
    assert invalid[paths[2]] == "not a JPEG or PNG image"
    kept = [values["packed_codes"] for reason, values in results if reason is None]
    np.testing.assert_array_equal(kept, rows)


def test_shards_by_a_stable_hash_and_their_number_from_the_item_count():
    import hashlib

    # BLAKE2b-64 of the UTF-8 id, big-endian, modulo the count: the same in every process
    # (Python's hash() of a str is salted per process).
    digest = hashlib.blake2b("photos/é.jpg".encode(), digest_size=8).digest()
    assert encode.stable_shard("photos/é.jpg", 7) == int.from_bytes(digest, "big") % 7
    assert [encode.auto_num_shards(n) for n in (0, 1, 100_000, 100_001, 10**12)] == [
        1,
        1,
        1,
        2,
        encode.MAX_SHARDS,
    ]


def _search_build(*args):
    command = [sys.executable, "-m", "wsdhash.search", "build", *args]
    result = subprocess.run(
        command, capture_output=True, text=True, env=_environment(), cwd=ROOT, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.parametrize("method", ["wsdhq", pytest.param("binary", marks=pytest.mark.slow)])
def test_the_index_built_from_the_shards_answers_as_the_one_built_from_the_images(
    beam_files, tmp_path, method
):
    """`search build --codes=FOLDER` over the pipeline's shards and `search build
    --images` in one process (the same export): every query's top-k, ids and
    distances, is the same (AQD: queries are the export's embeddings)."""
    from wsdhash.index.sharded import ShardedIndex

    images, model = beam_files["images"], beam_files[method]
    folder = tmp_path / "codes"
    _in_process(folder, model, images=f"{images}/*.png", num_shards=3, batch_size=6)
    _search_build(f"--codes={folder}", f"--output={tmp_path / 'from_shards'}")
    _search_build(f"--images={images}", f"--model={model}", f"--output={tmp_path / 'direct'}")
    from_shards = ShardedIndex(str(tmp_path / "from_shards"))
    direct = ShardedIndex(str(tmp_path / "direct"))
    assert from_shards.kind == direct.kind == ("aqd" if method == "wsdhq" else "flat")
    assert from_shards.num_items == direct.num_items == len(_image_files(images))
    key = "embedding" if method == "wsdhq" else "packed_codes"
    queries, _ = _reference(_image_files(images)[:12], model, key)
    queries = np.stack(list(queries.values()))
    for k in (1, 5, from_shards.num_items):
        got, expected = from_shards.search(queries, k), direct.search(queries, k)
        np.testing.assert_array_equal(got.distances, expected.distances)
        got_ids = np.asarray(from_shards.ids.take(got.positions.ravel())).astype(str)
        expected_ids = np.asarray(direct.ids.take(expected.positions.ravel())).astype(str)
        # Equal distances may list their items in another order (each index numbers
        # its items in its own build order): compare the sets per distance.
        for row in range(len(queries)):
            cut = slice(row * k, (row + 1) * k)
            pairs = sorted(zip(got.distances[row].tolist(), got_ids[cut].tolist(), strict=True))
            wanted = sorted(
                zip(expected.distances[row].tolist(), expected_ids[cut].tolist(), strict=True)
            )
            if k == from_shards.num_items:
                assert pairs == wanted
            else:  # ties at the cut-off may pick different items of the last distance
                last = got.distances[row, -1]
                assert [p for p in pairs if p[0] < last] == [p for p in wanted if p[0] < last]
