"""SavedModel export: reload in a fresh process without wsdhash, outputs equal the
in-memory model, signatures listed by saved_model_cli, bad bytes give an error result."""

import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from train_helpers import run_train

from wsdhash.data import list_files
from wsdhash.data.pipeline import make_dataset
from wsdhash.eval import binarize, pack_codes
from wsdhash.export import module as export_module
from wsdhash.export import trained_run


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    data_dir, workdir, output = root / "builtin", root / "run", root / "saved_model"
    run_train(data_dir, workdir, "--steps=3", "--method=orthohash")
    result = subprocess.run(
        [sys.executable, "-m", "wsdhash.export", f"--workdir={workdir}", f"--output={output}"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return data_dir, workdir, output


def test_saved_model_outputs_equal_the_in_memory_model(exported, tmp_path):
    data_dir, workdir, output = exported
    query = list_files.read_wsdhq_split(str(data_dir), str(data_dir), split="query")
    paths = list(query.paths[:6])
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(b"this is not an image at all")
    outputs = tmp_path / "outputs.npz"
    # A fresh interpreter where importing wsdhash fails: plain TensorFlow must suffice.
    script = textwrap.dedent(f"""
        import sys
        sys.modules["wsdhash"] = None
        import numpy as np, tensorflow as tf
        loaded = tf.saved_model.load({str(output)!r})
        files = {paths + [str(garbage)]!r}
        data = tf.constant([open(p, "rb").read() for p in files])
        result = loaded.signatures["serving_default"](images=data)
        np.savez({str(outputs)!r}, **{{k: v.numpy() for k, v in result.items()}})
    """)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    served = np.load(outputs)

    model, _, pipeline_config = trained_run.load_trained_model(str(workdir))
    batch = next(
        iter(make_dataset(query.take(np.arange(6)), pipeline_config, training=False, batch_size=6))
    )
    expected = model(batch["image"], training=False).numpy()
    np.testing.assert_allclose(served["embedding"][:6], expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(served["codes"][:6], binarize(expected))
    np.testing.assert_array_equal(served["packed_codes"][:6], pack_codes(binarize(expected)))
    assert served["valid"].tolist() == [True] * 6 + [False]
    assert not served["embedding"][6].any()

    # The float-pixel signature on the same crops.
    module = export_module.HashingServingModule(
        model, pipeline_config.image_size, pipeline_config.crop_size
    )
    pixels = module.encode_images(np.asarray(batch["image"], np.float32))
    np.testing.assert_allclose(pixels["embedding"].numpy(), expected, rtol=1e-5, atol=1e-5)


def test_saved_model_cli_lists_the_signatures(exported):
    _, _, output = exported
    cli = shutil.which("saved_model_cli") or os.path.join(
        os.path.dirname(sys.executable), "saved_model_cli"
    )
    result = subprocess.run(
        [cli, "show", "--dir", str(output), "--all"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-2000:]
    for name in ("serving_default", "encode_images"):
        assert f"signature_def['{name}']" in result.stdout
    for key in ("packed_codes", "codes", "embedding", "valid"):
        assert f"outputs['{key}']" in result.stdout


def test_export_refuses_to_overwrite_and_names_missing_runs(exported, tmp_path):
    _, workdir, output = exported
    command = [sys.executable, "-m", "wsdhash.export", f"--workdir={workdir}", f"--output={output}"]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode != 0 and "exists; pass overwrite=True" in result.stderr
    command = [
        sys.executable,
        "-m",
        "wsdhash.export",
        f"--workdir={tmp_path}",
        f"--output={tmp_path / 'x'}",
    ]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode != 0 and "no run_info.json" in result.stderr


def test_image_signature_collects_items_without_a_dataset_reduce(exported):
    """The per-item isolation (tf.data + ignore_errors) is collected with one batch: a
    `Dataset.reduce` re-instantiates its function on every call (about 1 s at batch 1)."""
    from tensorflow.core.protobuf import saved_model_pb2

    _, _, output = exported
    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString((output / "saved_model.pb").read_bytes())
    graph = saved.meta_graphs[0].graph_def
    ops = {node.op for node in graph.node}
    for function in graph.library.function:
        ops.update(node.op for node in function.node_def)
    assert "ReduceDataset" not in ops
    assert {"DatasetToSingleElement", "IgnoreErrorsDataset"} <= ops
