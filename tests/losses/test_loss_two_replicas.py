"""Two replicas (MirroredStrategy on two logical CPUs) train like one device.

Runs in a subprocess because logical devices must be configured before TensorFlow
initialises, which the other tests in this process have already done.
"""

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import numpy as np
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2
    )
    from wsdhash.methods import METHODS

    rng = np.random.default_rng(0)
    features = rng.normal(size=(12, 5)).astype(np.float32)
    labels = (rng.random((12, 4)) < 0.4).astype(np.float32)
    labels[0] = [1, 1, 0, 0]
    labels[1] = [0, 0, 1, 1]
    labels[2:8] = np.eye(4)[[0, 0, 1, 1, 2, 2]]
    kernel = tf.constant(rng.normal(size=(5, 16)).astype(np.float32))
    cases = {
        "orthohash": {"multiclass": True},
        "hyp2": {"zeta": -0.3},
        "triplet": {"margin": 12.0},
    }
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    for name, kwargs in cases.items():
        with strategy.scope():
            layer = METHODS.get(name).loss_class(bits=16, num_classes=4, seed=1, **kwargs)
            weight = tf.Variable(kernel)
        variables = [weight] + layer.trainable_weights

        with tf.GradientTape() as tape:
            single = tf.reduce_mean(layer(tf.matmul(features, weight), labels)["loss"])
        want = [g.numpy() for g in tape.gradient(single, variables)]

        def step(x, y):
            ctx = tf.distribute.get_replica_context()
            with tf.GradientTape() as tape:
                codes = tf.matmul(x, weight)
                all_codes = ctx.all_gather(codes, axis=0)
                all_labels = ctx.all_gather(y, axis=0)
                offset = ctx.replica_id_in_sync_group * tf.shape(x)[0]
                out = layer(codes, y, all_codes, all_labels, anchor_offset=offset)
                loss = tf.reduce_sum(out["loss"]) / 12.0
            grads = tape.gradient(loss, variables)
            return loss, grads

        def shard(ctx):
            start = ctx.replica_id_in_sync_group * 6
            return features[start:start + 6], labels[start:start + 6]

        xs = strategy.experimental_distribute_values_from_function(lambda c: shard(c)[0])
        ys = strategy.experimental_distribute_values_from_function(lambda c: shard(c)[1])
        loss, grads = strategy.run(tf.function(step), args=(xs, ys))
        total = strategy.reduce("SUM", loss, axis=None).numpy()
        assert abs(total - single.numpy()) < 1e-5 * max(1.0, abs(single.numpy())), name
        for got, expected in zip(grads, want):
            got = strategy.reduce("SUM", got, axis=None).numpy()
            np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6, err_msg=name)
            assert np.any(expected != 0), name
    print("OK")
    """
)


def test_two_replicas_with_gathered_references_match_one_device():
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], check=False, capture_output=True, text=True
    )
    assert result.returncode == 0 and result.stdout.strip().endswith("OK"), result.stderr[-3000:]
