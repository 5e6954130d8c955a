"""The method registry: every method's options reproduce the loss arguments the
command line gave before the interface (worked out by hand from the flag defaults),
the flags are defined from the options, and a new method is its files plus one
registry line."""

import types

import numpy as np
import pytest

from wsdhash.eval import EvalProtocol
from wsdhash.methods import METHODS, BinaryHashMethod, Option
from wsdhash.training.config import MethodConfig, ModelConfig, TrainConfig


def _flag_values(method, **overrides):
    values = {option.flag: option.default for option in method.options}
    values.update({"quantizer": "additive", **overrides})
    return types.SimpleNamespace(**values)


def test_default_options_give_the_published_loss_arguments():
    expected = {
        "orthohash": {
            "codebook_method": "B",
            "scale": None,
            "margin": 0.2,
            "margin_type": "cos",
            "multiclass": True,
            "quantization_weight": 0.0,
        },
        "hyp2": {"beta": 0.5, "zeta": None},
        "triplet": {"margin": None, "dnnh_sigmoid": False},
        "wsdhq": {
            "gamma": 1.0,
            "margin": "adaptive",
            "hardest_negatives": False,
            "variant": "wsdhq",
            "quantization_weight": 1e-4,
            "quantization_form": "faithful",
            # WSDHQ's own settings (not loss arguments, see the next test).
            "quantizer": "additive",
            "quantizer_update_every": 0,
        },
    }
    assert set(expected) <= set(METHODS.names())  # later methods have their own tests
    for name, arguments in expected.items():
        method = METHODS.get(name)
        assert method.name == name
        assert method.options_from_flags(_flag_values(method)) == arguments


def test_only_loss_options_reach_the_loss():
    from wsdhash.methods import Method

    wsdhq = METHODS.get("wsdhq")
    options = wsdhq.options_from_flags(_flag_values(wsdhq, quantizer_update_every=7))
    assert options["quantizer_update_every"] == 7
    config = TrainConfig(method=MethodConfig(name="wsdhq", options=options))
    # The base implementation, which WSDHQ extends with its tag embeddings.
    arguments = Method.loss_arguments(types.SimpleNamespace(options=wsdhq.options, config=config))
    assert arguments == {
        k: v for k, v in options.items() if k not in ("quantizer", "quantizer_update_every")
    }
    assert {o.argument for o in wsdhq.options if not o.loss_argument} == {
        "quantizer",
        "quantizer_update_every",
    }


def test_option_value_falls_back_to_the_options_default():
    class Toy(BinaryHashMethod):
        options = (Option("toy_period", "period", "integer", 5, "A period.", loss_argument=False),)

    given = Toy(TrainConfig(method=MethodConfig(options={"period": 9})))
    assert given.option_value("period") == 9 and given.loss_arguments() == {}
    assert Toy(TrainConfig()).option_value("period") == 5  # a config built in code


def test_conversions():
    orthohash, wsdhq = METHODS.get("orthohash"), METHODS.get("wsdhq")
    assert orthohash.options_from_flags(_flag_values(orthohash, orthohash_scale=8.0))["scale"] == 8
    flags = _flag_values(wsdhq, quantizer="product")
    assert wsdhq.options_from_flags(flags)["quantization_form"] == "product"
    flags = _flag_values(wsdhq, quantizer="product", wsdhq_quantization_form="hypersphere")
    assert wsdhq.options_from_flags(flags)["quantization_form"] == "hypersphere"


def test_every_flag_name_is_unique_and_prefixed():
    flags = [
        option.flag for method in map(METHODS.get, METHODS.names()) for option in method.options
    ]
    assert len(flags) == len(set(flags))
    for name in METHODS.names():
        # Flags that predate the options (recorded_as) keep their names.
        own = [o for o in METHODS.get(name).options if not o.recorded_as]
        assert all(o.flag.startswith(f"{name}_") for o in own)


def test_a_binary_method_is_its_loss_and_options():
    class Toy(BinaryHashMethod):
        name = "toy"
        loss_path = f"{__name__}:Scaled"
        options = (Option("toy_factor", "factor", "float", 2.0, "A factor."),)

    config = TrainConfig(
        model=ModelConfig(bits=16), method=MethodConfig(options={"factor": 3.0}), seed=0
    )
    method = Toy(config)
    assert method.output_dim() == 16 and method.build_loss(5).factor == 3.0
    features = np.array([[0.5, -1.0, 0.0, 2.0] * 4, [-0.5, 1.0, -0.1, -2.0] * 4], np.float32)
    labels = np.eye(2, dtype=np.uint8)
    protocol = EvalProtocol(topk=None, empty="zero", tie_bounds=True, radius_curve=False)
    result = method.evaluate(features, labels, features, labels, protocol)
    assert result.map == pytest.approx(1.0) and result.map_optimistic is not None
    contents = method.codes_file(
        types.SimpleNamespace(labels=labels, paths=np.array(["a", "b"])),
        features,
        types.SimpleNamespace(labels=labels, paths=np.array(["a", "b"])),
        features,
    )
    assert contents.scorer == "hamming" and contents.query.codes.shape == (2, 2)


class Scaled:
    """A toy loss (only its construction is checked)."""

    def __init__(self, bits, num_classes, seed, factor):
        self.factor = factor


def test_importing_the_registry_does_not_import_tensorflow():
    import subprocess
    import sys

    code = "import sys, wsdhash.methods; print('tensorflow' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    )
    assert result.stdout.strip() == "False"


def test_each_method_registers_where_it_is_defined():
    """The decorator sits on each class; the package only imports the modules, in the
    registration order the listings have always had."""
    import ast
    import inspect

    import wsdhash.methods

    for name in METHODS.names():
        method = METHODS.get(name)
        assert method.name == name
        assert inspect.getsource(method).startswith(f'@METHODS.register("{name}")\n'), name
    registrations = [
        node
        for node in ast.walk(ast.parse(inspect.getsource(wsdhash.methods)))
        if isinstance(node, ast.Attribute) and node.attr == "register"
    ]
    assert registrations == []
    assert METHODS.in_registration_order() == [
        "orthohash",
        "hyp2",
        "triplet",
        "wsdhq",
        "csq",
        "greedyhash",
        "dpsh",
        "hashnet",
        "dsh",
        "bihalf",
        "greedyhash_unsupervised",
        "dch",
        "dtsh",
        "dpn",
        "dfh",
        "idhn",
        "adsh",
    ]
