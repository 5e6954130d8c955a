"""What a report is made of: codes files, each with its run folder when there is one."""

from __future__ import annotations

import dataclasses
import json
import os

from wsdhash.eval import CodesFile, read_codes_file
from wsdhash.eval.scorers import scorer_kind


@dataclasses.dataclass
class ReportEntry:
    """One codes file, and what its run recorded.

    Attributes:
        name: a short label (the run folder's or the file's name).
        codes_path: the codes file.
        contents: its contents.
        config: the run's TrainConfig as recorded in run_info.json ({} without a run).
        log_dir: the run's TensorBoard folder, or None.
        run_metrics: the run's metrics.json ({} without a run); its "topk" is the R the
            run was evaluated with.
    """

    name: str
    codes_path: str
    contents: CodesFile
    config: dict
    log_dir: str | None
    run_metrics: dict = dataclasses.field(default_factory=dict)

    @property
    def method(self) -> str:
        return self.config.get("method", "codes file")

    @property
    def dataset(self) -> str:
        return self.config.get("dataset", "")

    @property
    def kind(self) -> str:
        return scorer_kind(self.contents).title


def load_entry(path: str) -> ReportEntry:
    """A codes file (`*.h5`) or a run folder (holding codes.h5, run_info.json, logs/)."""
    if os.path.isdir(path):
        codes_path = os.path.join(path, "codes.h5")
        if not os.path.isfile(codes_path):
            raise FileNotFoundError(f"{path}: a run folder without codes.h5 (did the run finish?).")
        info = _read_json(os.path.join(path, "run_info.json"))
        logs = os.path.join(path, "logs")
        name = os.path.basename(os.path.normpath(path))
        return ReportEntry(
            name,
            codes_path,
            read_codes_file(codes_path),
            info.get("config", {}),
            logs if os.path.isdir(logs) else None,
            _read_json(os.path.join(path, "metrics.json")),
        )
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Neither a codes file nor a run folder: {path}")
    name = os.path.splitext(os.path.basename(path))[0]
    return ReportEntry(name, path, read_codes_file(path), {}, None)


def _read_json(path: str) -> dict:
    if not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: not valid JSON ({error}).") from None
