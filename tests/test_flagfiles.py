"""`--flagfile=` expansion (wsdhash/flagfiles.py): a flagfile that includes a sibling by
a relative path works from any working directory, for every command; flagfiles written
for absl's working-directory rule (the repository's scripts/flags) expand exactly as
absl expands them; a missing or circular include is one line naming the files."""

import glob
import os
import subprocess
import sys
import textwrap

import pytest
from absl import flags

from wsdhash import flagfiles

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tree(tmp_path):
    """conf/run.flags includes its sibling common.flags and sub/bits.flags; the working
    directory is elsewhere."""
    conf = tmp_path / "conf"
    (conf / "sub").mkdir(parents=True)
    (conf / "common.flags").write_text("# shared\n--method=csq\n--hash_bit=16\n")
    (conf / "sub" / "bits.flags").write_text("  // a comment\n\n--hash_bit=32\n")
    (conf / "run.flags").write_text(
        "--flagfile=common.flags\n--workdir=runs/a\n--flagfile=sub/bits.flags\n"
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    return conf, elsewhere


def test_nested_flagfiles_are_read_beside_the_file_that_names_them(tmp_path, monkeypatch):
    conf, elsewhere = _tree(tmp_path)
    monkeypatch.chdir(elsewhere)
    run = str(conf / "run.flags")
    expanded = flagfiles.expand(["train", "--seed=1", f"--flagfile={run}", "--steps=5"])
    assert expanded == [
        "train",
        "--seed=1",
        "--method=csq",
        "--hash_bit=16",
        "--workdir=runs/a",
        "--hash_bit=32",
        "--steps=5",
    ]
    # The two-argument form and a path relative to the working directory on the
    # command line; nothing after `--` is expanded.
    assert flagfiles.expand(["train", "--flagfile", "../conf/run.flags", "--", "--flagfile=x"])[
        -2:
    ] == ["--", "--flagfile=x"]
    # absl alone resolves the nested name against the working directory: the bug.
    with pytest.raises(flags.CantOpenFlagFileError, match="common.flags"):
        flags.FlagValues().read_flags_from_files([f"--flagfile={run}"])


def test_a_path_only_the_working_directory_holds_still_works(tmp_path, monkeypatch):
    conf, elsewhere = _tree(tmp_path)
    (elsewhere / "local.flags").write_text("--seed=7\n")
    (conf / "run.flags").write_text("--flagfile=local.flags\n--flagfile=common.flags\n")
    monkeypatch.chdir(elsewhere)
    assert flagfiles.expand(["x", f"--flagfile={conf / 'run.flags'}"])[1:] == [
        "--seed=7",
        "--method=csq",
        "--hash_bit=16",
    ]
    # Beside the including file wins when both exist.
    (conf / "local.flags").write_text("--seed=8\n")
    assert flagfiles.expand(["x", f"--flagfile={conf / 'run.flags'}"])[1] == "--seed=8"


def test_missing_and_circular_includes_name_the_files(tmp_path, monkeypatch):
    conf, elsewhere = _tree(tmp_path)
    monkeypatch.chdir(elsewhere)
    (conf / "run.flags").write_text("--flagfile=nowhere.flags\n")
    with pytest.raises(flagfiles.FlagfileError) as error:
        flagfiles.expand(["x", f"--flagfile={conf / 'run.flags'}"])
    message = str(error.value)
    assert f"--flagfile=nowhere.flags in {conf / 'run.flags'}" in message
    assert str(conf / "nowhere.flags") in message and str(elsewhere) in message
    with pytest.raises(flagfiles.FlagfileError, match="top.flags: cannot read it"):
        flagfiles.expand(["x", "--flagfile=top.flags"])
    (conf / "run.flags").write_text("--flagfile=sub/loop.flags\n")
    (conf / "sub" / "loop.flags").write_text("--flagfile=../run.flags\n")
    with pytest.raises(flagfiles.FlagfileError, match=r"includes itself \(.*run.flags -> "):
        flagfiles.expand(["x", f"--flagfile={conf / 'run.flags'}"])


def test_the_repository_flagfiles_expand_as_absl_expands_them(monkeypatch):
    monkeypatch.chdir(REPOSITORY)
    names = sorted(glob.glob("scripts/flags/run*.flags"))
    assert names
    for name in names:
        expected = flags.FlagValues().read_flags_from_files([f"--flagfile={name}"])
        assert flagfiles.expand(["train", f"--flagfile={name}"])[1:] == expected, name


PROGRAM = textwrap.dedent("""
    from absl import flags
    from wsdhash import cli

    flags.DEFINE_integer("hash_bit", 0, "Bits.")
    flags.DEFINE_string("method", "", "Method.")
    flags.DEFINE_string("workdir", "", "Run folder.")
    FLAGS = flags.FLAGS

    def main(argv):
        print(FLAGS.method, FLAGS.hash_bit)

    cli.run(main, "wsdhash.toy")
""")


def test_every_command_reads_nested_flagfiles_from_another_directory(tmp_path):
    conf, elsewhere = _tree(tmp_path)
    script = tmp_path / "toy.py"
    script.write_text(PROGRAM)
    log = f"--log_file={tmp_path / 'toy.log'}"
    result = subprocess.run(
        [sys.executable, str(script), log, "--flagfile=../conf/run.flags"],
        cwd=elsewhere,
        capture_output=True,
        text=True,
        check=False,
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "csq 32\n", ""), result.stderr
    (conf / "run.flags").write_text("--flagfile=missing.flags\n")
    result = subprocess.run(
        [sys.executable, str(script), log, "--flagfile=../conf/run.flags"],
        cwd=elsewhere,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("wsdhash.toy: error: --flagfile=missing.flags in ../conf/run.flags")
