"""Every published-experiment script after WSDHQ's (run0009 on: every other registered
method) names real components, evaluates with its protocol's conventions, has its row
in the README's experiment table, and trains on the built-in dataset with tiny
overrides, so no script rots. WSDHQ's run0001-run0008 are covered in
test_wsdhq_pipeline.py. A new method's flagfiles are picked up with no edit here."""

import glob
import os
import re
import subprocess
import sys

import pytest
from train_helpers import read_json, single_label_lists
from worker_process import worker

from wsdhash.data.builtin import generate_builtin
from wsdhash.data.datasets import DATASETS
from wsdhash.data.preprocessing import (
    AUGMENTATIONS,
    NORMALIZATIONS,
    WHOLE_IMAGE_AUGMENTATIONS,
)
from wsdhash.methods import METHODS
from wsdhash.models.backbones import BACKBONES

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HERE = os.path.dirname(os.path.abspath(__file__))
FLAGFILES = sorted(
    path
    for path in glob.glob(os.path.join(ROOT, "scripts", "flags", "run*.flags"))
    if int(os.path.basename(path)[3:7]) >= 9
)


def resolve(path, values=None):
    """The flag values a flagfile resolves to (nested flagfiles, the last value wins)."""
    values = {} if values is None else values
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line.startswith("--"):
                continue
            name, _, value = line[2:].partition("=")
            if name == "flagfile":
                resolve(os.path.join(ROOT, value), values)
            else:
                values[name] = value
    return values


def test_every_experiment_has_a_script_and_names_registered_components():
    readme = open(os.path.join(ROOT, "README.md")).read()
    rows = {int(n) for n in re.findall(r"^\| run(\d{4}) \|", readme, flags=re.M)}
    numbers = {int(os.path.basename(path)[3:7]) for path in FLAGFILES}
    assert len(FLAGFILES) >= 33 and numbers == {n for n in rows if n >= 9}
    for flagfile in FLAGFILES:
        number = os.path.basename(flagfile)[3:7]
        values = resolve(flagfile)
        assert values["method"] in METHODS and values["method"] != "wsdhq", flagfile
        assert values["dataset"] in DATASETS, (flagfile, values["dataset"])
        assert values["backbone"] in BACKBONES, (flagfile, values["backbone"])
        assert values.get("normalization", "") == "" or values["normalization"] in NORMALIZATIONS
        assert values["workdir"] == f"checkpoints/run{number}"
        script = os.path.join(ROOT, "scripts", f"run{number}.sh")
        text = open(script).read()
        assert subprocess.run(["bash", "-n", script]).returncode == 0
        assert f"--flagfile=scripts/flags/run{number}.flags" in text
        # The script's evaluation uses the flagfile's protocol conventions.
        evaluate = re.search(r"wsdhash\.evaluate .*--topk=(\S+) --empty=(\S+)", text)
        assert evaluate and evaluate.groups() == (values["topk"], values["empty"]), script
        assert re.search(
            rf"\| run{number} \| .* \| {values['hash_bit']} \| {values['topk']} \|", readme
        )


def test_every_experiment_names_its_training_augmentation():
    """Every method's common flagfile states its authors' training augmentation, and the
    whole-image ones (no crop) come with image_size = crop_size, which they need."""
    for path in glob.glob(os.path.join(ROOT, "scripts", "flags", "*_common.flags")):
        assert "--augment=" in open(path).read(), path
    for flagfile in FLAGFILES:
        values = resolve(flagfile)
        assert values["augment"] in AUGMENTATIONS, flagfile
        if values["augment"] in WHOLE_IMAGE_AUGMENTATIONS:
            assert values["image_size"] == values["crop_size"], flagfile
    published = {  # the authors' code, read for each (the flagfiles' comments cite it)
        "run0048": "resize",
        "run0049": "random_crop_flip",  # GreedyHash CIFAR / ImageNet
        "run0050": "center_crop",
        "run0055": "resize",  # DPSH, DTSH
        "run0070": "resize",
        "run0073": "resize",  # BiHalf, GreedyHash-unsupervised
        "run0009": "resize_flip",
        "run0025": "resize_flip",  # HyP2, OrthoHash CIFAR-10
    }
    for number, augment in published.items():
        path = os.path.join(ROOT, "scripts", "flags", f"{number}.flags")
        assert resolve(path)["augment"] == augment, number


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("experiments")
    images = root / "builtin"
    generate_builtin(images, image_size=32, num_train=160, num_query=30, num_database=80)
    single_label_lists(images, root / "lists")
    return images, root / "lists"


TINY = [
    "--builtin_sizes=160,30,80",
    "--builtin_image_size=32",
    "--validation_size=32",
    "--backbone=small_cnn",
    "--weights=none",
    "--image_size=32",
    "--crop_size=28",
    "--steps=2",
    "--eval_every=0",
    "--checkpoint_every=5",
    "--log_every=1",
]


@pytest.mark.parametrize("method", sorted({resolve(path)["method"] for path in FLAGFILES}))
def test_flagfiles_train_on_the_builtin_dataset(data, tmp_path, method):
    images, lists = data
    samplers = {resolve(p).get("sampler") for p in FLAGFILES if resolve(p)["method"] == method}
    if "class_balanced" in samplers:  # class-balanced batches need single-label data
        dataset = [
            "--dataset=hashnet",
            f"--data_dir={lists}",
            f"--image_root={images}",
            "--classes_per_batch=4",
            "--images_per_class=4",
            "--batch_size=16",
        ]
    else:
        dataset = ["--dataset=builtin", f"--data_dir={images}", "--batch_size=16"]
    # One flagfile per dataset trains (the others differ in bits, which the overrides
    # keep); every flagfile is parsed with the overrides and its flags checked.
    runs, trained_datasets = [], set()
    for path in FLAGFILES:
        values = resolve(path)
        if values["method"] != method:
            continue
        train = values["dataset"] not in trained_datasets
        trained_datasets.add(values["dataset"])
        # A whole-image recipe keeps its augmentation: the image is already the crop.
        sizes = ["--image_size=28"] if values["augment"] in WHOLE_IMAGE_AUGMENTATIONS else []
        runs.append(
            {
                "flagfile": path,
                "workdir": str(tmp_path / os.path.basename(path)[:7]),
                "overrides": [*TINY, *sizes, *dataset],
                "train": train,
            }
        )
    assert runs
    # One long-lived runner per test process trains every method's flagfiles.
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    runner = [sys.executable, os.path.join(HERE, "flagfile_runner.py"), "--serve"]
    worker("flagfile_runner", runner, env=env, cwd=ROOT).call({"runs": runs})
    for run in runs:
        workdir = run["workdir"]
        values = read_json(os.path.join(workdir, "flagfile_values.json"))
        assert values["method"] == method
        if not run["train"]:
            continue
        config = read_json(os.path.join(workdir, "run_info.json"))["config"]
        # The overrides shrink data and model; method, loss and optimiser stay the script's.
        assert config["method"] == values["method"] == method
        assert config["bits"] == values["hash_bit"] and config["head"] == values["head"]
        optimizer = config["optimizer"]
        assert optimizer["name"] == values["optimizer"]
        assert optimizer["learning_rate"] == pytest.approx(values["lr"])
        assert optimizer["weight_decay"] == pytest.approx(values["weight_decay"])
        assert optimizer["backbone_lr_multiplier"] == pytest.approx(
            values["backbone_lr_multiplier"]
        )
        assert config["normalization"] == values["normalization"]
        assert config["augment"] == values["augment"]
        assert config["empty"] == values["empty"]
        # Every option of the method reaches the loss as the flagfile sets it.
        options = config["method_options"]
        for option in METHODS.get(method).options:
            if option.convert is None:
                assert options[option.argument] == values[option.flag], option.flag
        assert config["sampler"] == values["sampler"]
        metrics = read_json(os.path.join(workdir, "metrics.json"))
        cutoff = "all" if values["topk"] == "all" else values["topk"]
        assert metrics["map_name"].startswith(f"mAP@{cutoff}[")
        assert metrics["map_name"].endswith(f"empty={values['empty']}]")
        assert 0.0 <= metrics["map"] <= 1.0
