"""The commands package: one module per console script in wsdhash/commands/, the only
modules that define flags; every `python -m wsdhash.<name>` spelling still runs its
command, and `--help` shows the command's own docstring and flags however it starts."""

import ast
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMANDS = os.path.join(ROOT, "wsdhash", "commands")
NOT_COMMANDS = {"__init__", "flag_groups", "setting_flags"}  # shared flag definitions
# The kept `python -m` spellings (thin shims) of the commands whose module path moved.
SPELLINGS = {
    "prepare": "wsdhash.data.prepare",
    "baselines": "wsdhash.baselines",
}


def _entry_points() -> dict[str, str]:
    with open(os.path.join(ROOT, "setup.py"), encoding="utf-8") as f:
        return dict(re.findall(r'"wsdhash-([a-z]+)=([a-z_.]+):run"', f.read()))


def _command_names() -> list[str]:
    names = {name[:-3] for name in os.listdir(COMMANDS) if name.endswith(".py")}
    return sorted(names - NOT_COMMANDS)


def test_every_command_module_is_a_console_script_of_its_name():
    scripts = _entry_points()
    assert sorted(scripts) == _command_names()
    for name, module in scripts.items():
        assert module == f"wsdhash.commands.{name}", (name, module)


def _defines_flags(path: str) -> list[int]:
    """Line numbers of `flags.DEFINE_*(...)` / `DEFINE_*(...)` calls in a module."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name.startswith("DEFINE_") or name == "DEFINE":
                lines.append(node.lineno)
    return lines


def test_only_the_commands_define_flags():
    """Outside wsdhash/commands/ only cli.run defines its own --verbose and --log_file
    (inside `run`, not at import)."""
    package = os.path.join(ROOT, "wsdhash")
    offenders = []
    for folder, _, files in os.walk(package):
        for name in files:
            path = os.path.join(folder, name)
            if not name.endswith(".py") or path.startswith(COMMANDS + os.sep):
                continue
            relative = os.path.relpath(path, ROOT)
            lines = _defines_flags(path)
            if relative == os.path.join("wsdhash", "cli.py"):
                assert len(lines) == 2, lines  # define_run_flags
                continue
            offenders += [f"{relative}:{line}" for line in lines]
    assert not offenders, offenders
    # A library module that imports cli gets no flag from it.
    code = "from absl import flags; import wsdhash.cli; print(sorted(flags.FLAGS))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    ).stdout
    assert "verbose" not in out and "log_file" not in out, out


@pytest.mark.parametrize("name", _command_names())
def test_the_kept_spelling_runs_the_command_and_shows_its_help(name):
    """`python -m wsdhash.<name> --help` (the shim) prints the command module's own
    docstring and lists the flags the command module defines."""
    spelling = SPELLINGS.get(name, f"wsdhash.{name}")
    result = subprocess.run(
        [sys.executable, "-m", spelling, "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        check=False,
    )
    text = result.stdout + result.stderr
    source_path = os.path.join(COMMANDS, f"{name}.py")
    with open(source_path, encoding="utf-8") as f:
        module = ast.parse(f.read())
    first_line = ast.get_docstring(module).splitlines()[0]
    assert text.startswith(first_line), text[:300]
    # A flag the module defines by name (the first literal DEFINE_*("name", ...)).
    defined = [
        node.args[0].value
        for node in ast.walk(module)
        if isinstance(node, ast.Call)
        and getattr(node.func, "attr", "").startswith("DEFINE_")
        and node.args
        and isinstance(node.args[0], ast.Constant)
    ]
    groups = [
        node.func.attr
        for node in ast.walk(module)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and getattr(node.func.value, "id", "") == "flag_groups"
        and node.func.attr.startswith("define_")
    ]
    assert defined or groups, f"{name} defines no flag?"
    expected = (
        defined[0] if defined else {"define_seed": "seed", "define_output": "output"}[groups[0]]
    )
    assert re.search(rf"^\s+--(\[no\])?{expected}\b", text, re.M), text[-2000:]


def test_no_library_module_imports_a_command():
    """Only the kept `python -m` spellings (shims) import wsdhash.commands from outside
    it: the library never depends on an entry point."""
    package = os.path.join(ROOT, "wsdhash")
    importers = set()
    for folder, _, files in os.walk(package):
        for name in files:
            path = os.path.join(folder, name)
            if not name.endswith(".py") or path.startswith(COMMANDS + os.sep):
                continue
            with open(path, encoding="utf-8") as f:
                tree = ast.parse(f.read(), path)
            for node in ast.walk(tree):
                modules = []
                if isinstance(node, ast.ImportFrom) and node.module:
                    modules = [node.module]
                elif isinstance(node, ast.Import):
                    modules = [alias.name for alias in node.names]
                if any(
                    m == "wsdhash.commands" or m.startswith("wsdhash.commands.") for m in modules
                ):
                    importers.add(os.path.relpath(path, package))
    shims = {f"{name}.py" for name in _command_names()} - {
        "prepare.py",
        "baselines.py",
        "export.py",
    }
    shims |= {"data/prepare.py", "baselines/__main__.py", "export/__main__.py"}
    assert importers == shims
    for shim in shims:  # each is the three-line shim, nothing more
        with open(os.path.join(package, shim), encoding="utf-8") as f:
            code = [line for line in f.read().splitlines()[1:] if line.strip()]
        assert code[0].startswith("from wsdhash.commands.") and code[0].endswith(" import run")
        assert code[1:] == ['if __name__ == "__main__":', "    run()"], (shim, code)
