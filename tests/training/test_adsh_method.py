"""ADSH's method (wsdhash/methods/adsh.py): its sampled training order, its database
codes (learned V where V has a row, the network's sign elsewhere), and one training
through the command line whose codes file holds the learned codes. The loss and the V
update are tested in tests/losses/test_adsh_loss.py; the shared method contract
(1 vs 2 replicas, resume, export and serve) runs in test_method_contracts.py."""

import os
import subprocess
import sys

import numpy as np
from train_helpers import read_json, run_train

from wsdhash.data.builtin import generate_builtin
from wsdhash.eval import binarize, pack_codes, read_codes_file
from wsdhash.methods import METHODS
from wsdhash.training.config import MethodConfig, ModelConfig, SamplerConfig, TrainConfig


class _Split:
    """The two fields of a SplitData the method reads."""

    def __init__(self, num_items):
        self.paths = np.array([f"item{i}.png" for i in range(num_items)])
        self.labels = np.eye(4, dtype=np.float32)[np.arange(num_items) % 4]

    def __len__(self):
        return len(self.paths)


def _method(num_items=50, num_samples=12, epochs=2, batch_size=8, seed=3):
    config = TrainConfig(
        model=ModelConfig(bits=8),
        method=MethodConfig(
            name="adsh",
            supervision="labels",
            options={"num_samples": num_samples, "epochs_per_iteration": epochs},
        ),
        sampler=SamplerConfig(batch_size=batch_size),
        seed=seed,
    )
    method = METHODS.get("adsh")(config)
    method.prepare_splits(_Split(num_items), None)
    return method


def test_training_order_is_the_seeded_samples_in_whole_batches():
    method = _method()
    # 2 epochs of 12 sampled rows in batches of 8: 3 steps (24 rows) per outer iteration.
    assert method.steps_per_iteration == 3
    stream = method.index_stream(None)()
    order = [next(stream) for _ in range(3 * 24)]
    for iteration in range(3):
        rows = order[24 * iteration : 24 * (iteration + 1)]
        sample = method.sample(iteration)
        assert len(set(sample.tolist())) == 12
        # Each epoch is one permutation of the iteration's sample.
        assert sorted(rows[:12]) == sorted(sample.tolist()) == sorted(rows[12:])
    assert method.sample(0).tolist() != method.sample(1).tolist()
    # The same seed gives the same order (a resumed run skips into it); another seed not.
    again = _method().index_stream(None)()
    assert [next(again) for _ in range(72)] == order
    assert _method(seed=4).sample(0).tolist() != method.sample(0).tolist()


def test_database_codes_are_v_where_v_has_a_row():
    method = _method(num_items=4)
    v = np.array([[1, -1, 1, -1, 1, 1, -1, -1]] * 4, np.float32)
    features = np.full((3, 8), 0.5, np.float32)
    features[1] = -0.5
    codes = method._database_codes(v, features, ["item2.png", "other.png", "item0.png"])
    np.testing.assert_array_equal(codes[0], v[2])
    np.testing.assert_array_equal(codes[1], -np.ones(8))  # not in V: the network's sign
    np.testing.assert_array_equal(codes[2], v[0])


def test_trains_and_writes_its_learned_database_codes(tmp_path):
    data_dir = tmp_path / "builtin"
    generate_builtin(data_dir, image_size=32, num_train=160, num_query=30, num_database=80)
    workdir = tmp_path / "run"
    run_train(
        data_dir,
        workdir,
        "--method=adsh",
        "--head=tanh",
        "--steps=4",
        "--eval_every=2",
        "--adsh_num_samples=24",
        "--adsh_epochs_per_iteration=1",
    )
    import tensorflow as tf

    contents = read_codes_file(workdir / "codes.h5")
    assert contents.database_codes == "learned"  # an index of it says so to the service
    # The codes file is written from the checkpoint selected on validation.
    selected = read_json(workdir / "metrics.json")["selected_checkpoint"]
    reader = tf.train.load_checkpoint(selected)
    name = next(n for n in reader.get_variable_to_shape_map() if "database_codes" in n)
    v = reader.get_tensor(name)
    assert set(np.unique(v)) == {-1.0, 1.0}  # updated from its zero start
    # 80 database items, 32 carved as validation queries: V has 48 rows, in the order of
    # the training split; the carved items keep the network's codes.
    assert v.shape == (48, 16)
    network = pack_codes(binarize(contents.database.features))
    learned = np.array([not np.array_equal(a, b) for a, b in zip(contents.database.codes, network)])
    assert 0 < learned.sum() <= 48
    held = {tuple(row) for row in pack_codes(v)}
    for codes, changed in zip(contents.database.codes, learned):
        if changed:
            assert tuple(codes) in held

    # Searched and served as trained, with the usual commands: `search build --codes`
    # keeps V and marks it learned in the manifest, and the service starts on the
    # exported model with its default start-up check (skipped for learned codes: the
    # network need not reproduce V) and ranks the index's codes for a query image.
    index_dir = tmp_path / "index"
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "wsdhash.search",
            "build",
            f"--codes={workdir / 'codes.h5'}",
            f"--output={index_dir}",
        ],
        capture_output=True,
        text=True,
        env=dict(os.environ, CUDA_VISIBLE_DEVICES=""),
    )
    assert built.returncode == 0, built.stderr[-2000:]
    from wsdhash.eval.binary import hamming_distances
    from wsdhash.export import saved_model, trained_run
    from wsdhash.service import engine as engine_lib

    model, _, pipeline_config = trained_run.load_trained_model(str(workdir))
    exported = saved_model.export_saved_model(model, pipeline_config, str(tmp_path / "exported"))
    engine = engine_lib.load(exported, str(index_dir), images_root=str(data_dir))
    assert engine.checked == {"skipped": "the index holds database codes the method learned"}
    # What ties the two instead: the same network's weights fingerprint on both sides.
    assert contents.model_fingerprint and len(contents.model_fingerprint) == 64
    assert engine.model_fingerprint == contents.model_fingerprint
    assert engine.index.manifest["model_fingerprint"] == contents.model_fingerprint
    with open(os.path.join(data_dir, contents.query.ids[0]), "rb") as f:
        query = f.read()
    outputs = engine.encode([query])
    result = engine.neighbours(outputs, 5)
    expected = np.sort(hamming_distances(outputs["packed_codes"], contents.database.codes)[0])
    np.testing.assert_array_equal(result.distances[0], expected[:5])
