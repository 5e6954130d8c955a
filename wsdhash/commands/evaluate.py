"""Evaluates a codes file: mAP@R, precision@N, precision within Hamming radius, PR curve.

Usage:
  python -m wsdhash.evaluate --codes=run/codes.h5 --topk=5000 --ties=index --empty=zero
  python -m wsdhash.evaluate --codes=run/codes.h5 --topk=all --json
  python -m wsdhash.evaluate --codes=CODES_FOLDER     # `python -m wsdhash.pipeline encode`

A codes folder (wsdhash/eval/codes_folder.py) with labelled query and database splits
is read whole, its shards in order, as the codes file holding the same rows
(`codes_folder.read_codes_folder`), so it evaluates exactly as that file would.

`--topk=all` ranks the whole database (the only spelling for it; 0 and negative values
are rejected). Conventions are those of docs/evaluation.md; the flags make one
`EvalProtocol` (`wsdhash.eval.protocol`), and the conventions' flags (R, ties, empty,
seed, N, radius) default to its defaults.

Output: a readable table, or with `--json` exactly one JSON object on stdout whose
key `map` holds mAP@R.

What is computed (the JSON keys stay the same; a figure not computed is null or absent):
- always: mAP@R and precision@N (`--precision_at`);
- `--tie_bounds` (default on): the optimistic and pessimistic mAP (relevant items first /
  last within ties), `map_optimistic` and `map_pessimistic`, printed in the table when
  either differs from the headline by more than 0.005; `--notie_bounds` leaves them null;
- `--hamming_radius=2` (default; binary codes): precision within that radius,
  `precision_within_radius_2`; a negative value skips it;
- `--pr_curve` (alias `--radius_curve`; default off; binary codes): precision and recall
  for every radius 0..K, `radius_curve`. It needs every item's relevance to every query
  and costs about as much again as everything else; the others cost little on top of
  mAP (a few per cent each for Hamming codes).

`--upgrade_codes` rewrites a codes file of an older wsdhash (one without the checksum
over its contents, which this version refuses to read) in the current format.

Errors in the input (missing, corrupted or empty file, bad layout, bad flag) print one
line on stderr, `wsdhash.evaluate: error: ...`, and exit with status 2 (wsdhash/cli.py).
"""

from __future__ import annotations

import json

from absl import flags

from wsdhash import cli
from wsdhash.commands import flag_groups
from wsdhash.eval import codes_file, codes_folder, metrics
from wsdhash.eval.file_evaluation import evaluate_codes_file
from wsdhash.eval.protocol import (
    TIE_BOUND_TOLERANCE,
    EvalProtocol,
)

_TOPK_ALL = "all"

FLAGS = flags.FLAGS
flags.DEFINE_string(
    "codes",
    None,
    "The HDF5 codes file to evaluate (query and database groups), or a codes folder.",
)
flags.DEFINE_string(
    "topk", _TOPK_ALL, "R of mAP@R: a positive integer, or 'all' for the whole database."
)
flag_groups.define_protocol()
flag_groups.define_seed(
    "Seed of the database permutation used by --ties=random.", EvalProtocol.seed
)
flags.DEFINE_list(
    "precision_at",
    [str(n) for n in EvalProtocol.precision_at],
    "The N of the precision@N curve (clipped to the database size).",
)
flags.DEFINE_integer(
    "hamming_radius",
    EvalProtocol.hamming_radius,
    "Radius of the 'precision within radius' figure (binary codes); negative: skip it.",
)
flags.DEFINE_boolean(
    "tie_bounds",
    True,
    "Also compute the optimistic and pessimistic mAP (relevant items first / last within "
    "ties); --notie_bounds leaves them null.",
)
flags.DEFINE_boolean(
    "pr_curve",
    False,
    "Also compute and print precision and recall for every Hamming radius 0..K (binary "
    "codes; needs the full relevance matrix, about doubling the time).",
)
flags.DEFINE_alias("radius_curve", "pr_curve")
flags.DEFINE_boolean("json", False, "Print one JSON object instead of a table.")
flags.DEFINE_boolean(
    "upgrade_codes",
    False,
    "Rewrite --codes, a codes file of an older wsdhash (without the checksum over its "
    "contents), in this version's format, then exit. Only for files you trust: their "
    "metadata cannot be checked.",
)
flags.DEFINE_integer("num_threads", 0, "Worker threads; 0 picks min(4, available cores).")
flags.mark_flag_as_required("codes")


def parse_topk(text: str) -> int | None:
    """Turns the --topk text into R (None for 'all'); raises ValueError otherwise."""
    if text.strip().lower() == _TOPK_ALL:
        return None
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"--topk must be a positive integer or 'all'; got {text!r}.") from None
    if value < 1:
        raise ValueError(f"--topk must be a positive integer or 'all' (not 0 or -1); got {value}.")
    return value


def _parse_precision_at(values: list[str]) -> tuple[int, ...]:
    try:
        parsed = tuple(int(v) for v in values)
    except ValueError:
        raise ValueError(f"--precision_at must be positive integers; got {values}.") from None
    if any(n < 1 for n in parsed):
        raise ValueError(f"--precision_at must be positive integers; got {values}.")
    return parsed


def protocol_from_flags() -> EvalProtocol:
    """The evaluation protocol the flags ask for; raises ValueError for a bad value."""
    return EvalProtocol(
        topk=parse_topk(FLAGS.topk),
        precision_at=_parse_precision_at(FLAGS.precision_at),
        hamming_radius=FLAGS.hamming_radius if FLAGS.hamming_radius >= 0 else None,
        radius_curve=FLAGS.pr_curve,
        tie_bounds=FLAGS.tie_bounds,
        **flag_groups.protocol_values(),
    )


def format_table(
    result: metrics.RetrievalMetrics, contents: codes_file.CodesFile, path: str
) -> str:
    """The human-readable report."""
    query, database = contents.query, contents.database
    lines = [
        f"codes file  {path}",
        (
            f"sizes       {query.num_rows} queries x {database.num_rows} database items, "
            f"{contents.bits} bits, {query.labels.shape[1]} classes"
        ),
        "",
        (
            f"{result.map_name}  {result.map:.6f}"
            f"  ({result.num_scored_queries} of {query.num_rows} queries averaged)"
        ),
    ]
    if result.tie_bounds_matter():
        lines.append(
            f"  tie-order bounds (differ by > {TIE_BOUND_TOLERANCE}): "
            f"optimistic {result.map_optimistic:.6f}, pessimistic {result.map_pessimistic:.6f}"
        )
    if result.precision_within_radius is not None:
        lines.append(
            f"precision within Hamming radius {result.hamming_radius}  "
            f"{result.precision_within_radius:.6f}  (no item within the radius counts as 0)"
        )
    if result.precision_at_n:
        lines += ["", f"precision@N (ties={result.ties}; N clipped to {database.num_rows})"]
        lines.append(f"{'N':>8}  precision")
        lines += [f"{n:>8}  {value:.6f}" for n, value in result.precision_at_n.items()]
    if result.radii is not None and FLAGS.pr_curve:
        lines += ["", "precision-recall over Hamming radius", f"{'radius':>8}  precision  recall"]
        for radius, precision, recall in zip(
            result.radii, result.radius_precision, result.radius_recall
        ):
            lines.append(f"{radius:>8}  {precision:.6f}   {recall:.6f}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        raise cli.UsageError(f"unexpected arguments {argv[1:]}")
    if FLAGS.upgrade_codes:
        if codes_folder.is_codes_folder(FLAGS.codes):
            raise cli.UsageError(f"--upgrade_codes: {FLAGS.codes} is a codes folder, not a file.")
        try:
            codes_file.upgrade_codes_file(FLAGS.codes)
        except (OSError, ValueError) as error:
            raise cli.UsageError(str(error)) from None
        print(f"{FLAGS.codes} rewritten in codes file format {codes_file.FORMAT_VERSION}")
        return 0
    try:
        protocol = protocol_from_flags()
        folder = codes_folder.is_codes_folder(FLAGS.codes)
        if folder:
            contents = codes_folder.read_codes_folder(FLAGS.codes)
        else:
            contents = codes_file.read_codes_file(FLAGS.codes)
        what = "Codes folder" if folder else "Codes file"
        for name in codes_file.SPLITS:
            if getattr(contents, name).num_rows == 0:
                raise ValueError(
                    f"{what} {FLAGS.codes!r}: the {name} split is empty (0 items); "
                    "nothing to evaluate."
                )
        result = evaluate_codes_file(
            contents,
            protocol,
            num_threads=FLAGS.num_threads or None,
            source=f"{what} {FLAGS.codes!r}",
        )
    except (OSError, ValueError) as error:
        raise cli.UsageError(str(error)) from None

    if FLAGS.json:
        report = result.to_dict(include_radius_curve=FLAGS.pr_curve)
        report.update(
            codes=FLAGS.codes,
            bits=int(contents.bits),
            num_database=contents.database.num_rows,
        )
        print(json.dumps(report))
    else:
        print(format_table(result, contents, FLAGS.codes))
    return 0


def run() -> None:
    """Console entry point (`wsdhash-evaluate`)."""
    cli.run(main, "wsdhash.evaluate")


if __name__ == "__main__":
    run()
