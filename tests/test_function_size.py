"""No function in wsdhash/ is longer than 80 lines (from its `def` to its last line);
ruff's C901 (ruff.toml) keeps their complexity at most 15."""

import ast
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "wsdhash"
MAX_LINES = 80


def long_functions(root: pathlib.Path, limit: int) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > limit:
                    found.append(f"{path.relative_to(root.parent)}:{node.lineno} {node.name}")
    return found


def test_no_function_over_80_lines():
    assert not long_functions(PACKAGE, MAX_LINES)


def test_the_check_finds_a_long_function(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_LINES))
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "m.py").write_text(f"def short():\n    pass\n\n\ndef long():\n{body}\n")
    assert long_functions(tmp_path / "pkg", MAX_LINES) == ["pkg/m.py:5 long"]
