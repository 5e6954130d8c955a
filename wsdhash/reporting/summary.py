"""The report's Markdown summary: one row per codes file, an mAP-vs-bits table per
(method, dataset), and links to the figures. Every number comes from
`evaluate_codes_file`, with the conventions in the metric's name."""

from __future__ import annotations

from wsdhash.eval import RetrievalMetrics
from wsdhash.reporting.sources import ReportEntry


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.4f}"


def markdown(
    entries: list[ReportEntry],
    results: list[RetrievalMetrics],
    figures: dict[str, str],
    precision_n: int,
) -> str:
    """The summary text; `figures` maps captions to PNG file names (relative links)."""
    lines = ["# wsdhash report", ""]
    lines += [
        f"| entry | method | dataset | bits | ranking | metric | mAP | P@{precision_n} | P(r<=2) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for entry, result in zip(entries, results, strict=True):
        lines.append(
            f"| {entry.name} | {entry.method} | {entry.dataset or '-'} | {entry.contents.bits} "
            f"| {entry.kind} | {result.map_name} | {result.map:.4f} "
            f"| {_fmt(result.precision_at_n.get(precision_n))} "
            f"| {_fmt(result.precision_within_radius)} |"
        )
    groups: dict[tuple[str, str], dict[int, float]] = {}
    for entry, result in zip(entries, results, strict=True):
        groups.setdefault((entry.method, entry.dataset), {})[entry.contents.bits] = result.map
    bits = sorted({b for values in groups.values() for b in values})
    lines += ["", "## mAP vs bits", ""]
    lines.append("| method | dataset | " + " | ".join(f"{b} bits" for b in bits) + " |")
    lines.append("|---|---|" + "---|" * len(bits))
    for (method, dataset), values in sorted(groups.items()):
        cells = " | ".join(_fmt(values.get(b)) for b in bits)
        lines.append(f"| {method} | {dataset or '-'} | {cells} |")
    if figures:
        lines += ["", "## Figures", ""]
        lines += [f"![{caption}]({name})" for caption, name in figures.items()]
    return "\n".join(lines) + "\n"
