"""Every numeric flag of every command has a declared range, and values outside it
(0 or -1 where not allowed, NaN, infinities, huge numbers, a wrong type) are refused at
parse time in one line naming the flag, before the command does any work."""

import json
import math
import os
import re
import subprocess
import sys

import pytest

from wsdhash import flag_bounds, settings
from wsdhash.training.config import TrainConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROBE = os.path.join(ROOT, "tests", "flag_probe.py")


def _command_modules() -> list[str]:
    """The console scripts' modules (setup.py): every command in wsdhash/commands/."""
    with open(os.path.join(ROOT, "setup.py"), encoding="utf-8") as f:
        text = f.read()
    modules = re.findall(r'"wsdhash-[a-z]+=([a-z_.]+):run"', text)
    assert len(modules) >= 13, modules
    return sorted(modules)


# Flags a command needs before it parses at all (the probe gives them a value).
REQUIRED = {
    "wsdhash.commands.prepare": ["dataset=cifar10"],
    "wsdhash.commands.evaluate": ["codes=x.h5"],
    "wsdhash.commands.export": ["workdir=x", "output=x"],
    "wsdhash.commands.extract": ["output=x.h5"],
    "wsdhash.commands.tags": ["output_dir=x"],
    "wsdhash.commands.baselines": ["features=x.h5", "method=itq", "output=x.h5"],
}
SETTING_BOUNDS = settings.flag_bounds_of(TrainConfig)
# The flags where -1 is a documented value.
MINUS_ONE_ALLOWED = {"validation_size", "hyp2_zeta"}  # -1: auto; a cosine threshold


@pytest.fixture(scope="module", params=_command_modules())
def probe(request):
    module = request.param
    result = subprocess.run(
        [sys.executable, PROBE, module, *REQUIRED.get(module, [])],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return module, json.loads(result.stdout)


def test_every_numeric_flag_is_bounded_and_refuses_bad_values(probe):
    module, report = probe
    assert report, f"{module} has no numeric flag?"
    for name, entry in report.items():
        results = entry["results"]
        where = f"{module} --{name}"
        assert entry["declared"], f"{where} has no range in wsdhash/flag_bounds.py"
        assert results["default"] == "accepted", f"{where}: default refused: {results}"
        for case in ("wrong_type", "empty"):
            assert results[case].startswith("parse:"), f"{where}={case}: {results[case]}"
        for case in ("nan", "inf", "minus_inf", "huge_integer", "huge_float"):
            assert results[case] != "accepted", f"{where}: {case} accepted"
            assert f"--{name}" in results[case], results[case]
        if name not in MINUS_ONE_ALLOWED:
            assert results["minus_one"] != "accepted", f"{where}: -1 accepted"
        # A training setting's range is in its field's metadata (declared by train).
        bound = flag_bounds.BOUNDS.get(name) or SETTING_BOUNDS.get(name)
        if bound is not None:  # method options are declared by train at import
            assert (results["zero"] == "accepted") == bound.contains(0), (where, results)
            if results["zero"] != "accepted":
                assert results["zero"].startswith("bound:"), results["zero"]


def test_bound_ranges_worked_by_hand():
    bound = flag_bounds.Bound(0, 1, above=True)
    assert not bound.contains(0) and bound.contains(1e-12) and bound.contains(1)
    assert not bound.contains(1.0000001) and not bound.contains(math.nan)
    assert bound.describe() == "> 0 and <= 1"
    assert flag_bounds.Bound(-1, 10**9).describe() == ">= -1 and <= 1000000000"
    with pytest.raises(ValueError, match="two bounds"):
        flag_bounds.declare("seed", flag_bounds.Bound(1, 2))


@pytest.mark.parametrize(
    "command, flag",
    [
        (["wsdhash.train", "--lr=-1"], "--lr"),
        (["wsdhash.train", "--lr=nan"], "--lr"),
        (["wsdhash.train", "--seed=-1"], "--seed"),
        (["wsdhash.train", "--batch_size=100000000"], "--batch_size"),
        (["wsdhash.train", "--hash_bit=100000"], "--hash_bit"),
        (["wsdhash.train", "--dpsh_quantization_weight=inf"], "--dpsh_quantization_weight"),
        (["wsdhash.search", "query", "--index=i", "--codes=c.h5", "--k=0"], "--k"),
        (
            ["wsdhash.search", "query", "--index=i", "--codes=c.h5", "--num_queries=-2"],
            "--num_queries",
        ),
        (["wsdhash.tags", "--output_dir=o", "--merge_eps=nan"], "--merge_eps"),
    ],
)
def test_commands_refuse_out_of_range_flags_in_one_line_with_status_2(tmp_path, command, flag):
    result = subprocess.run(
        [sys.executable, "-m", *command],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        timeout=120,
        check=False,
    )
    lines = [line for line in result.stderr.splitlines() if "error" in line]
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and flag in lines[0], result.stderr
    assert not os.listdir(tmp_path), "nothing may be written before the flags are checked"
