"""Atomic writes: all or nothing, and no temporary files left behind."""

import json
import os

import pytest

from wsdhash import atomic_files


def test_write_json_replaces_the_file(tmp_path):
    path = tmp_path / "sub" / "metrics.json"
    atomic_files.write_json(path, {"map": 0.5})
    atomic_files.write_json(path, {"map": 0.75})
    assert json.loads(path.read_text()) == {"map": 0.75}
    assert os.listdir(tmp_path / "sub") == ["metrics.json"]


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text("old")
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_files.atomic_path(path) as temporary:
            with open(temporary, "w") as f:
                f.write("half a fi")
            raise RuntimeError("disk full")
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["metrics.json"]
    with pytest.raises(TypeError):
        atomic_files.write_json(path, {"bad": object()})
    assert path.read_text() == "old"
