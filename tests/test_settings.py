"""Settings declared once (wsdhash/settings.py): a dataclass field's metadata gives its
flag, range, checks and resume policy, and the bridge (wsdhash/commands/setting_flags.py)
defines the flags and builds the dataclass from them."""

import dataclasses
import json

import pytest
from absl import flags

from wsdhash import flag_bounds, settings
from wsdhash.commands import setting_flags
from wsdhash.settings import CHANGEABLE, FREE, PATH, setting
from wsdhash.training import run_info
from wsdhash.training.config import TrainConfig


@dataclasses.dataclass(frozen=True)
class Inner:
    rate: float = setting(
        0.5,
        flag="toy_rate",
        help="A rate.",
        resume=CHANGEABLE,
        bound=flag_bounds.Bound(0, 1, above=True),
    )
    hidden: int = setting(7, flag=None)

    def __post_init__(self):
        settings.check(self)


@dataclasses.dataclass(frozen=True)
class Toy:
    count: int = setting(3, flag="toy_count", help="A count.", bound=flag_bounds.Bound(1, 9))
    mode: str = setting("a", flag="toy_mode", choices=("a", "b"), help="A mode.", unrecorded="a")
    folder: str = setting("", flag="toy_folder", help="A folder.", resume=PATH)
    period: int = setting(5, flag="toy_period", help="A period.", resume=FREE, minimum=1)
    limit: int | None = setting(None, flag="toy_limit", kind="string", help="'all' or N.")
    inner: Inner = Inner()

    def __post_init__(self):
        settings.check(self)


@pytest.fixture
def toy_flags():
    values = flags.FlagValues()
    names = setting_flags.define_flags(Toy, values, "toy_module")
    yield values, names
    for name in ("toy_count", "toy_rate"):  # declared ranges: leave the table as found
        flag_bounds.BOUNDS.pop(name, None)


def test_the_bridge_defines_each_fields_flag_from_its_metadata(toy_flags):
    values, names = toy_flags
    assert names == ["toy_count", "toy_mode", "toy_folder", "toy_period", "toy_limit", "toy_rate"]
    assert {f.name for f in values.get_flags_for_module("toy_module")} == set(names)
    assert (values["toy_count"].default, values["toy_count"].help) == (3, "A count.")
    assert isinstance(values["toy_count"].parser, flags.IntegerParser)
    assert isinstance(values["toy_rate"].parser, flags.FloatParser)
    assert isinstance(values["toy_limit"].parser, flags.ArgumentParser)  # kind="string"
    assert values["toy_mode"].parser.enum_values == ["a", "b"]
    assert flag_bounds.BOUNDS["toy_rate"] == flag_bounds.Bound(0, 1, above=True)
    values(["prog", "--toy_rate=1.5"])
    with pytest.raises(ValueError, match=r"--toy_rate must be > 0 and <= 1, got 1.5"):
        flag_bounds.check(values)


def test_the_bridge_builds_the_dataclass_from_parsed_flags(toy_flags):
    values, _ = toy_flags
    values(["prog", "--toy_count=4", "--toy_mode=b", "--toy_rate=0.25", "--toy_limit=all"])
    with pytest.raises(ValueError, match="toy_limit needs the entry point's conversion"):
        setting_flags.config_from_flags(Toy, values, {})
    toy = setting_flags.config_from_flags(Toy, values, {"limit": 0, "inner.hidden": 2})
    assert toy == Toy(count=4, mode="b", folder="", period=5, limit=0, inner=Inner(0.25, 2))


def test_fields_check_their_choices_and_minimums_naming_the_flag():
    with pytest.raises(ValueError, match=r"--toy_mode must be one of \('a', 'b'\), got 'c'"):
        Toy(mode="c")
    with pytest.raises(ValueError, match="--toy_count must be >= 1, got 0"):
        Toy(count=0)
    with pytest.raises(ValueError, match="--toy_period must be >= 1, got 0"):
        Toy(period=0)
    with pytest.raises(ValueError, match="--toy_rate must be > 0, got 0"):
        Inner(rate=0)
    Toy(count=10**6)  # the flag's upper bound is the flag's business, not the field's


def test_resume_policies_and_unrecorded_defaults_come_from_the_metadata():
    assert settings.resume_policies(Toy) == {
        "count": "must_match",
        "mode": "must_match",
        "folder": PATH,
        "period": FREE,
        "limit": "must_match",
        "inner.rate": CHANGEABLE,
        "inner.hidden": "must_match",
    }
    assert settings.unrecorded_defaults(Toy) == {"mode": "a"}
    assert settings.message_flags(Toy)["inner.rate"] == "toy_rate"
    assert "inner.hidden" not in settings.message_flags(Toy)


@dataclasses.dataclass(frozen=True)
class Part:
    kind: str = setting("x", key="part", flag="toy_part", choices=("x", "y"), help="A part.")
    size: int = setting(2, flag="toy_size", help="A size.", resume=FREE)

    def __post_init__(self):
        settings.check(self)


@dataclasses.dataclass(frozen=True)
class Whole:
    part: Part = settings.group(Part)
    name: str = setting("w", flag="toy_name", help="A name.", unrecorded="w")
    inner: Inner = Inner()
    limits: tuple[int, ...] = setting((), flag=None)

    def __post_init__(self):
        settings.check(self)


def test_a_groups_settings_are_keyed_flagged_and_recorded_as_the_parents():
    assert [key for key, _, _ in settings.walk(Whole)] == [
        "part",
        "size",
        "name",
        "inner.rate",
        "inner.hidden",
        "limits",
    ]
    assert settings.resume_policies(Whole)["size"] == FREE
    assert settings.message_flags(Whole) == {
        "part": "toy_part",
        "size": "toy_size",
        "name": "toy_name",
        "inner.rate": "toy_rate",
    }
    values = flags.FlagValues()
    try:
        names = setting_flags.define_flags(Whole, values, "toy_module")
        assert names == ["toy_part", "toy_size", "toy_name", "toy_rate"]
        values(["prog", "--toy_part=y", "--toy_rate=0.25"])
        whole = setting_flags.config_from_flags(Whole, values, {"size": 4, "inner.hidden": 3})
    finally:
        flag_bounds.BOUNDS.pop("toy_rate", None)
    assert whole == Whole(part=Part("y", 4), inner=Inner(0.25, 3))
    with pytest.raises(ValueError, match=r"--toy_part must be one of \('x', 'y'\), got 'z'"):
        Part(kind="z")


def test_the_flat_form_puts_a_groups_settings_in_its_parents_place():
    whole = Whole(part=Part("y", 4), inner=Inner(0.25, 3), limits=(1, 2))
    flat = settings.to_flat_dict(whole)
    assert flat == {
        "part": "y",
        "size": 4,
        "name": "w",
        "inner": {"rate": 0.25, "hidden": 3},
        "limits": (1, 2),
    }
    assert settings.from_flat_dict(Whole, flat) == whole
    recorded = json.loads(json.dumps(flat))  # as run_info.json holds it: lists
    assert settings.from_flat_dict(Whole, recorded) == whole
    # A setting the flat form lacks (recorded before it existed) takes its default.
    assert settings.from_flat_dict(Whole, {"size": 4}) == Whole(part=Part(size=4))
    with pytest.raises(TypeError, match="Whole: no such settings: bits, kind"):
        settings.from_flat_dict(Whole, {"kind": "y", "bits": 8})
    with pytest.raises(TypeError, match="Inner: no such settings: toy_rate"):
        settings.from_flat_dict(Whole, {"inner": {"toy_rate": 0.5}})


def test_training_resume_policy_is_the_one_run_info_kept_by_hand():
    """The lists run_info.py held before the policies moved into the fields' metadata
    (the reference: old run_info.json files must resume exactly as they did)."""
    assert set(run_info.RESUME_FREE_FIELDS) == {
        "workdir",
        "log_every",
        "checkpoint_every",
        "keep_checkpoints",
    }
    assert set(run_info.RESUME_CHANGEABLE) == {
        "steps",
        "eval_every",
        "optimizer.learning_rate",
        "optimizer.backbone_lr_multiplier",
        "optimizer.momentum",
        "optimizer.weight_decay",
        "optimizer.decay",
        "optimizer.boundaries",
        "method_options.*",
    }
    assert run_info.UNRECORDED_DEFAULTS == {
        "augment": "random_crop_flip",
        "ties": "index",
        "validation_database": "train",
        "data_format": "files",
        "tfrecords": "",
        "head_hidden": 0,
        "head_dropout": 0.5,
    }
    paths = {f for f, p in settings.resume_policies(TrainConfig).items() if p == PATH}
    assert paths == {"data_dir", "tag_dir", "weights", "dataset_options", "tfrecords"}


# run_info.json's "config" keys before the settings were grouped: old runs hold them,
# and the search service and the reports read them. Only WSDHQ's "quantizer" and
# "quantizer_update_every" have moved since, into "method_options" (its options;
# `config.upgrade_recorded` reads the old runs).
RECORDED_KEYS = {
    *"dataset data_dir dataset_options backbone weights allow_pickle head bits".split(),
    *"method method_options supervision batch_size steps optimizer seed workdir".split(),
    *"image_size crop_size ten_crop augment eval_every checkpoint_every".split(),
    *"keep_checkpoints validation_size validation_database select_on topk".split(),
    *"mixed_precision log_every sampler classes_per_batch images_per_class tag_dir".split(),
    *"normalization empty ties head_init".split(),
    *"data_format tfrecords".split(),
    *"head_hidden head_dropout".split(),  # added later: unrecorded = no hidden layer
}


def test_the_recorded_config_stays_flat_and_reads_back():
    from wsdhash.training.config import (
        MethodConfig,
        OptimizerConfig,
        SamplerConfig,
        config_from_dict,
        to_flat_dict,
    )

    config = TrainConfig(
        method=MethodConfig(name="hyp2", options={"beta": 0.5}),
        sampler=SamplerConfig(
            kind="class_balanced", batch_size=8, classes_per_batch=2, images_per_class=4
        ),
        optimizer=OptimizerConfig(learning_rate=0.5, boundaries=(3, 6)),
        seed=7,
    )
    flat = to_flat_dict(config)
    assert set(flat) == RECORDED_KEYS
    assert set(flat["optimizer"]) == {f.name for f in dataclasses.fields(OptimizerConfig)}
    assert (flat["method"], flat["method_options"], flat["sampler"]) == (
        "hyp2",
        {"beta": 0.5},
        "class_balanced",
    )
    recorded = json.loads(json.dumps(flat))  # as run_info.json holds it
    assert config_from_dict(recorded) == config
    # A run recorded before the newer settings reads back with their defaults.
    old = {key: value for key, value in recorded.items() if key not in run_info.UNRECORDED_DEFAULTS}
    assert config_from_dict(old) == config
    with pytest.raises(TypeError, match="no such settings: hash_bit"):
        config_from_dict({**recorded, "hash_bit": 16})


def test_train_defines_every_settings_flag_with_the_fields_default():
    from wsdhash.commands import train

    own = train.training_flag_names()
    for path, field, meta in settings.walk(TrainConfig):
        name = settings.flag_name(field)
        if not name:
            assert meta.set_by is None or meta.set_by in own, path
            continue
        flag = flags.FLAGS[name]
        assert name in own and flag.help.endswith(meta.help), path  # enums: "<a|b>: help"
        if meta.flag_choice_values() is not None:
            assert flag.parser.enum_values == list(meta.flag_choice_values()), path
        expected = setting_flags.flag_default(field, meta)
        assert flag.default == expected, (path, flag.default, expected)
        if setting_flags.computed(meta):  # the entry point converts these
            assert path in {"steps", "workdir", "topk", "head_init", "data_format", "tfrecords"}, (
                path
            )
