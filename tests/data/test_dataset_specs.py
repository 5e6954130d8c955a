"""Every dataset is one `DatasetSpec` registered in its own module: the registries and
`wsdhash.data.prepare`'s table and defaults come from the specs, and importing the
registry does not start TensorFlow."""

import inspect
import os
import subprocess
import sys

import pytest

from wsdhash.data import dataset_spec, datasets, preparation

# wsdhash.data.prepare defines absl flags (`--dataset`, ...) that wsdhash.train defines
# too: importing both in one pytest process is a DuplicateFlagError, so what prepare
# computes is read from a child process.
_OUTPUT_DIR_CASES = [
    ("flickr25k", None, "data/flickr25k/hyp2"),
    ("flickr25k", "wsdhq", "data/flickr25k/wsdhq"),
    ("nuswide", None, "data/nuswide"),
    ("nuswide", "hashnet", "data/nuswide"),
    ("nuswide", "wsdhq", "data/nuswide/wsdhq"),
    ("cifar10", None, "data/cifar10/protocol1"),
    ("cifar10", "2", "data/cifar10/protocol2"),
    ("coco", None, "data/coco"),
    ("voc2012", None, "data/voc2012"),
    ("no_such_dataset", None, "data/no_such_dataset"),
]


@pytest.fixture(scope="module")
def prepare_module():
    """{"doc": prepare's docstring, "dirs": [default_output_dir(d, p) per case]}."""
    import json

    cases = [[dataset, protocol] for dataset, protocol, _ in _OUTPUT_DIR_CASES]
    code = (
        "import json, sys; from wsdhash.commands import prepare; "
        f"cases = json.loads({json.dumps(json.dumps(cases))}); "
        "print(json.dumps({'doc': prepare.__doc__, "
        "'dirs': [prepare.default_output_dir(d, p) for d, p in cases]}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout)


def test_registries_come_from_the_specs():
    names = dataset_spec.SPECS.names()
    assert datasets.DATASETS.names() == names
    for name in names:
        spec = dataset_spec.SPECS.get(name)
        assert spec.name == name
        assert datasets.DATASETS.get(name) is spec.load
        if spec.prepare is None:
            assert name not in preparation.PREPARERS
        else:
            assert preparation.PREPARERS.get(name) is spec.prepare


def test_each_spec_is_registered_by_the_module_that_reads_it():
    """No central list of registrations: datasets.py and preparation.py register
    nothing; a real dataset's spec lives in its sources/ module."""
    for module in (datasets, preparation):
        assert ".register(" not in inspect.getsource(module)
    for name in preparation.PREPARERS.names():
        spec = dataset_spec.SPECS.get(name)
        preparer = getattr(spec.prepare, "func", spec.prepare)  # functools.partial or not
        module = sys.modules[preparer.__module__]
        assert module.__name__.startswith("wsdhash.data.sources."), name
        assert any(value is spec for value in vars(module).values()), name


def test_prepare_table_has_a_row_per_preparer_in_registration_order(prepare_module):
    table = dataset_spec.prepare_table().splitlines()
    widths = {len(line) for line in table}
    assert widths == {84}, widths  # one width: the columns line up
    labels = [line[2:16].strip() for line in table[2:] if line[2:16].strip()]
    # voc2012 shares voc2007's row.
    assert labels == [
        "flickr25k",
        "nuswide",
        "imagenet100",
        "coco",
        "voc2007/2012",
        "cifar10",
        "cub200",
        "stanford_dogs",
        "image_folder",
    ]
    doc = prepare_module["doc"]
    assert doc is not None and "\n".join(table) in doc
    assert "{table}" not in doc


def test_default_output_dirs(prepare_module):
    for (dataset, protocol, expected), got in zip(
        _OUTPUT_DIR_CASES, prepare_module["dirs"], strict=True
    ):
        assert got == os.path.join(*expected.split("/")), (dataset, protocol)


def test_protocol_types():
    assert dataset_spec.SPECS.get("cifar10").protocol_type("2") == 2
    assert dataset_spec.SPECS.get("nuswide").protocol_type("wsdhq") == "wsdhq"


def test_image_root_applies_to_image_datasets_only():
    options = {"builtin_sizes": (1, 2, 3), "builtin_image_size": 8, "seed": 0}
    for name in ("builtin", "features"):
        assert "image_root" not in datasets.command_line_options(name, image_root="x", **options)
    for name in ("coco", "wsdhq", "hashnet", "image_folder", "unknown"):
        assert datasets.command_line_options(name, image_root="x", **options) == {"image_root": "x"}


def test_importing_the_registry_does_not_import_tensorflow():
    code = (
        "import sys, wsdhash.data.datasets, wsdhash.data.prepare; "
        "print('tensorflow' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    )
    assert result.stdout.strip() == "False"
