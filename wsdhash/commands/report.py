"""Figures and a Markdown summary for codes files and training runs.

    python -m wsdhash.report --inputs=RUN1,RUN2,baseline_32.h5 --output_dir=report
        [--topk=5000|all] [--ties=index] [--empty=zero] [--tsne_points=1000]

Each input is a codes file or a run folder (codes.h5 plus run_info.json and logs/).
Writes into --output_dir: `report.md` (per-input mAP@R with its conventions,
precision@N, precision within Hamming radius 2, and an mAP-vs-bits table per method
and dataset), `precision_recall.png` (over Hamming radius, binary codes only),
`precision_at_n.png`, `training_<name>.png` (scalars from each run's TensorBoard logs)
and `tsne_<name>.png` (database codes, coloured by their first label).
"""

from __future__ import annotations

import os
import sys

from absl import flags

from wsdhash import cli
from wsdhash.commands import flag_groups
from wsdhash.eval.protocol import EvalProtocol

FLAGS = flags.FLAGS
flags.DEFINE_list("inputs", [], "Codes files and/or run folders.")
flags.DEFINE_string("output_dir", "report", "Where report.md and the PNG files go.")
flags.DEFINE_string(
    "topk", None, "mAP cut-off R: an integer or 'all' (default: the run's R, else all)."
)
flag_groups.define_protocol()
flags.DEFINE_integer("tsne_points", 1000, "Database items in each t-SNE (0: no t-SNE).")
flag_groups.define_seed("Seeds the t-SNE sample and layout, and random ties.")
flags.DEFINE_integer("precision_n", 100, "N of the precision@N column.")


def _topk(entry):
    if FLAGS.topk is not None:
        if FLAGS.topk == "all":
            return None
        if not FLAGS.topk.isdigit() or int(FLAGS.topk) < 1:
            raise cli.UsageError(f"--topk must be a positive integer or 'all'; got {FLAGS.topk!r}.")
        return int(FLAGS.topk)
    return entry.run_metrics.get("topk")  # the run's R; None: the whole database


def _protocol(entry) -> EvalProtocol:
    """The protocol `entry` is evaluated under: the flags' conventions, the run's R
    unless --topk is given, the default precision@N plus --precision_n, tie bounds."""
    precision_at = sorted(set(EvalProtocol.precision_at) | {FLAGS.precision_n})
    return EvalProtocol(
        topk=_topk(entry),
        precision_at=precision_at,
        tie_bounds=True,
        **flag_groups.protocol_values(),
    )


def main(argv):
    if len(argv) > 1:
        raise cli.UsageError(f"Unexpected arguments: {argv[1:]}")
    if not FLAGS.inputs:
        raise cli.UsageError("--inputs needs at least one codes file or run folder.")
    from wsdhash import atomic_files
    from wsdhash.eval.file_evaluation import evaluate_codes_file
    from wsdhash.reporting import figures, summary, training_logs, tsne
    from wsdhash.reporting.sources import load_entry

    try:
        entries = [load_entry(path) for path in FLAGS.inputs]
    except (OSError, ValueError) as error:
        print(f"report: error: {error}", file=sys.stderr)
        return 2
    names = [e.name for e in entries]
    if len(set(names)) != len(names):  # two runs called "codes", say
        for i, entry in enumerate(entries):
            entry.name = f"{i}_{entry.name}"
    results = [evaluate_codes_file(e.contents, _protocol(e), source=e.codes_path) for e in entries]
    os.makedirs(FLAGS.output_dir, exist_ok=True)
    out = lambda name: os.path.join(FLAGS.output_dir, name)  # noqa: E731
    written = {}
    pr = {
        e.name: (r.radius_recall, r.radius_precision)
        for e, r in zip(entries, results, strict=True)
        if r.radii is not None
    }
    if pr:
        figures.precision_recall(pr, out("precision_recall.png"))
        written["precision-recall over Hamming radius"] = "precision_recall.png"
    figures.precision_at_n(
        {e.name: r.precision_at_n for e, r in zip(entries, results, strict=True)},
        out("precision_at_n.png"),
    )
    written["precision@N"] = "precision_at_n.png"
    for entry in entries:
        if entry.log_dir:
            curves = training_logs.read_scalars(entry.log_dir)
            if curves:
                name = f"training_{entry.name}.png"
                figures.training_curves(curves, f"training: {entry.name}", out(name))
                written[f"training curves: {entry.name}"] = name
        if FLAGS.tsne_points:
            points, colours = tsne.tsne_points(entry.contents, FLAGS.tsne_points, FLAGS.seed)
            label_names = list(entry.config.get("label_names", []))
            name = f"tsne_{entry.name}.png"
            figures.embedding_scatter(
                points, colours, label_names, f"t-SNE of {entry.name} ({entry.kind})", out(name)
            )
            written[f"t-SNE: {entry.name}"] = name
    text = summary.markdown(entries, results, written, FLAGS.precision_n)
    atomic_files.write_text(out("report.md"), text)
    print(text)
    print(f"report written to {FLAGS.output_dir}")
    return 0


def run():
    cli.run(main, "wsdhash.report")


if __name__ == "__main__":
    run()
