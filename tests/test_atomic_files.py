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


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_written_files_get_the_umask_mode_not_mkstemps_0600(tmp_path, umask):
    previous = os.umask(umask)
    try:
        atomic_files.write_json(tmp_path / "metrics.json", {"map": 0.5})
        with atomic_files.atomic_path(tmp_path / "codes.h5") as temporary:
            with open(temporary, "wb") as f:  # what h5py does: reopen the temporary
                f.write(b"x")
        (tmp_path / "plain.txt").write_text("x")
        assert atomic_files.default_file_mode() == 0o666 & ~umask
    finally:
        os.umask(previous)
    expected = (tmp_path / "plain.txt").stat().st_mode & 0o777
    assert expected == 0o666 & ~umask
    for name in ("metrics.json", "codes.h5"):
        assert (tmp_path / name).stat().st_mode & 0o777 == expected, name
