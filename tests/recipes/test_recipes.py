"""Recipes (wsdhash/recipes/) and how `python -m wsdhash.train` applies them: as values
for the flags a user did not give, never over a flag given on the command line or in a
flagfile, only with --backbone=features unless --recipe says otherwise."""

import os

import pytest
from absl import flags

from wsdhash import cli, recipes
from wsdhash.commands import train as train_command
from wsdhash.methods import METHODS

FLAGS = flags.FLAGS


@pytest.fixture
def parse():
    """Parses train's flags in this process; restores them afterwards."""

    def parse_argv(*argv):
        FLAGS.unparse_flags()
        FLAGS(["train", *argv])

    yield parse_argv
    FLAGS.unparse_flags()


def test_flagfile_lines_are_parsed_as_absl_reads_them():
    lines = ["# a comment", "", "--lr=0.003", "  --epochs=12  ", "--center", "--nocache"]
    assert recipes.parse_flagfile_lines("x.flags", lines) == {
        "lr": "0.003",
        "epochs": "12",
        "center": "true",
        "cache": "false",
    }
    with pytest.raises(ValueError, match=r"x.flags:1: expected --flag=value"):
        recipes.parse_flagfile_lines("x.flags", ["lr=1"])
    with pytest.raises(ValueError, match=r"x.flags:2: a recipe cannot include"):
        recipes.parse_flagfile_lines("x.flags", ["--lr=1", "--flagfile=other.flags"])


def test_every_recipe_sets_real_flags_to_values_they_accept():
    names = train_command.training_flag_names()
    folder = os.path.dirname(recipes.recipe_path("features", "default"))
    files = sorted(os.listdir(folder))
    assert "default.flags" in files
    for file in files:
        method = file.removesuffix(".flags")
        assert method == recipes.DEFAULT or method in METHODS.names(), file
        recipe = recipes.load_recipe("features", method)
        for name, value in recipe.values.items():
            assert name in names, (file, name)
            assert name not in ("method", "features", "workdir", "seed", "hash_bit"), file
            FLAGS[name]._parse(value)  # raises on a value the flag refuses


def test_a_method_recipe_is_the_default_with_its_own_file_on_top():
    default = recipes.load_recipe("features", recipes.DEFAULT)
    for method in METHODS.names():
        recipe = recipes.load_recipe("features", method)
        own_path = recipes.recipe_path("features", method)
        own = {}
        if os.path.exists(own_path):
            with open(own_path) as file:
                own = recipes.parse_flagfile_lines(own_path, file)
        assert recipe.values == {**default.values, **own}, method


def test_train_applies_the_features_recipe_under_the_users_flags(parse):
    recipe = recipes.load_recipe("features", "dpsh")
    name, value = next((n, v) for n, v in recipe.values.items() if n == "lr")
    parse("--method=dpsh", "--backbone=features", "--features=f.h5", "--lr=0.5")
    line = train_command.apply_recipe()
    assert FLAGS.lr == 0.5  # given by the user: kept
    assert f"your flags kept: --lr=0.5 (recipe: {value})" in line
    for other, text in recipe.values.items():
        if other != name:
            assert FLAGS[other].value == FLAGS[other]._parse(text), other
            assert f"--{other}={text}" in line
    assert "recipe features/dpsh" in line


def test_no_recipe_for_images_or_with_recipe_none(parse):
    parse("--method=dpsh", "--lr=0.2")
    assert train_command.apply_recipe() == ""
    defaults = {name: FLAGS[name].default for name in train_command.training_flag_names()}
    assert all(FLAGS[n].value == defaults[n] for n in defaults if n not in ("method", "lr"))
    parse("--method=dpsh", "--backbone=features", "--features=f.h5", "--recipe=none")
    assert train_command.apply_recipe() == ""
    assert FLAGS.optimizer == FLAGS["optimizer"].default
    # --recipe=features asks for it whatever the backbone.
    parse("--method=dpsh", "--recipe=features")
    assert "recipe features/dpsh" in train_command.apply_recipe()


def test_a_recipe_value_is_undone_by_the_next_parse(parse):
    parse("--method=csq", "--backbone=features", "--features=f.h5")
    train_command.apply_recipe()
    changed = [
        n
        for n in recipes.load_recipe("features", "csq").values
        if FLAGS[n].value != FLAGS[n].default
    ]
    assert changed  # the recipe set something
    parse("--method=csq")
    assert all(FLAGS[n].value == FLAGS[n].default for n in changed)


def test_a_recipe_naming_an_unknown_flag_is_a_one_line_error(parse, tmp_path, monkeypatch):
    (tmp_path / "features").mkdir()
    (tmp_path / "features" / "default.flags").write_text("--no_such_flag=1\n")
    monkeypatch.setattr(recipes, "_HERE", str(tmp_path))
    parse("--method=csq", "--backbone=features", "--features=f.h5")
    with pytest.raises(cli.UsageError, match=r"default.flags: --no_such_flag is not a flag"):
        train_command.apply_recipe()
    (tmp_path / "features" / "default.flags").write_text("--epochs=many\n")
    with pytest.raises(cli.UsageError, match=r"default.flags: --epochs=many: "):
        train_command.apply_recipe()
