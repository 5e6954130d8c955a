"""What a dataset is to wsdhash: one `DatasetSpec`, declared and registered in the
module that reads it.

    SPEC = register(DatasetSpec(
        name="cub200",
        load=prepared_lists("cub200", topk=None),     # (data_dir, **options) -> dataset
        prepare=prepare,                              # download -> checked lists
        prepare_root=("CUB_200_2011 or TFDS data dir",),
    ))

`register` fills the three registries from the spec: `SPECS` (name -> spec),
`DATASETS` (name -> the loading factory; `wsdhash.data.datasets`) and `PREPARERS`
(name -> the preparer, for datasets that have one; `wsdhash.data.preparation`).
`wsdhash.data.prepare`'s help table, its default output folders and protocols come
from the specs too. Importing `wsdhash.data.datasets` imports every dataset's module,
so the registries are complete; none of them imports TensorFlow (entry points read the
registries while defining their flags).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any

from wsdhash.registry import Registry


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """One dataset, everything wsdhash knows of it in one place.

    Attributes:
        name: the registry name (`--dataset`).
        load: `(data_dir, **options) -> RetrievalDataset`: where its splits live, its
            protocol's mAP cut-off R and its preprocessing sizes.
        prepare: `(root, output_dir, *, seed, **options) -> Prepared`: turns the
            download into checked lists (wsdhash.data.preparation), or None.
        default_protocol: the protocol `prepare` uses when `--protocol` is not given
            (None: the preparer's own default).
        protocol_type: converts `--protocol` to the preparer's argument (e.g. int).
        output_folder: protocol -> the default `--output_dir` of `prepare` (default
            `data/<name>`).
        prepare_root: lines of the `--root` column of `prepare`'s help table; empty:
            no row of its own (e.g. voc2012, listed with voc2007).
        prepare_protocol: the `--protocol` column of that row.
        prepare_label: the `--dataset` column of that row (default: `name`).
        image_root: whether the entry points' `--image_root` applies.
    """

    name: str
    load: Callable[..., Any]
    prepare: Callable[..., Any] | None = None
    default_protocol: str | None = None
    protocol_type: Callable[[str], Any] = str
    output_folder: Callable[[str | None], str] | None = None
    prepare_root: tuple[str, ...] = ()
    prepare_protocol: str = ""
    prepare_label: str = ""
    image_root: bool = True

    def default_output_dir(self, protocol: str | None) -> str:
        """`prepare`'s output folder for `protocol` (None: the default protocol)."""
        protocol = protocol if protocol is not None else self.default_protocol
        if self.output_folder is None:
            return os.path.join("data", self.name)
        return self.output_folder(protocol)


SPECS: Registry[DatasetSpec] = Registry("dataset")
DATASETS: Registry[Callable[..., Any]] = Registry("dataset")
PREPARERS: Registry[Callable[..., Any]] = Registry("dataset preparer")


def register(spec: DatasetSpec) -> DatasetSpec:
    """Registers `spec` (and its loader and preparer); returns it."""
    SPECS.register(spec.name)(spec)
    DATASETS.register(spec.name)(spec.load)
    if spec.prepare is not None:
        PREPARERS.register(spec.name)(spec.prepare)
    return spec


def _table_line(dataset: str, root: str, protocol: str) -> str:
    # The --root column takes up to 40 characters (no space before the bar).
    return f"| {dataset:<14} | {root:<40}| {protocol:<21} |"


def prepare_table() -> str:
    """`prepare`'s table of datasets (--dataset, --root, --protocol), in registration
    order, one row per spec with `prepare_root` lines."""
    lines = [
        _table_line("--dataset", "--root", "--protocol"),
        "|" + "-" * 16 + "|" + "-" * 41 + "|" + "-" * 23 + "|",
    ]
    for name in SPECS.in_registration_order():
        spec = SPECS.get(name)
        for i, root in enumerate(spec.prepare_root):
            first = i == 0
            label = (spec.prepare_label or spec.name) if first else ""
            lines.append(_table_line(label, root, spec.prepare_protocol if first else ""))
    return "\n".join(lines)
