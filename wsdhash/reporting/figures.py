"""The report's figures, as PNG files (matplotlib, Agg backend, written atomically)."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from wsdhash import atomic_files  # noqa: E402


def _save(figure, path: str) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    atomic_files.write_bytes(path, buffer.getvalue())
    return path


def precision_recall(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: str) -> str:
    """name -> (recall, precision) over Hamming radius 0..K."""
    figure, axis = plt.subplots(figsize=(5, 4))
    for name, (recall, precision) in curves.items():
        axis.plot(recall, precision, marker=".", label=name)
    axis.set(xlabel="recall", ylabel="precision", title="precision-recall (Hamming radius)")
    axis.set_xlim(0, 1.02), axis.set_ylim(0, 1.02), axis.grid(alpha=0.3), axis.legend(fontsize=7)
    return _save(figure, path)


def precision_at_n(curves: dict[str, dict[int, float]], path: str) -> str:
    """name -> {N: precision@N}."""
    figure, axis = plt.subplots(figsize=(5, 4))
    for name, values in curves.items():
        ns = sorted(values)
        axis.plot(ns, [values[n] for n in ns], marker=".", label=name)
    axis.set(xlabel="N (items returned)", ylabel="precision@N", title="precision@N")
    axis.grid(alpha=0.3), axis.legend(fontsize=7)
    return _save(figure, path)


def training_curves(curves: dict[str, tuple[np.ndarray, np.ndarray]], title: str, path: str) -> str:
    """tag -> (steps, values), one panel per tag."""
    tags = sorted(curves)
    figure, axes = plt.subplots(len(tags), 1, figsize=(6, 2.2 * len(tags)), squeeze=False)
    for axis, tag in zip(axes[:, 0], tags, strict=True):
        steps, values = curves[tag]
        axis.plot(steps, values)
        axis.set(ylabel=tag), axis.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("step")
    axes[0, 0].set_title(title)
    return _save(figure, path)


def embedding_scatter(points: np.ndarray, colours: np.ndarray, names, title: str, path: str) -> str:
    """2-D points coloured by class index (t-SNE of codes)."""
    figure, axis = plt.subplots(figsize=(5, 5))
    scatter = axis.scatter(points[:, 0], points[:, 1], c=colours, cmap="tab20", s=6)
    handles, _ = scatter.legend_elements(num=None)
    present = np.unique(colours)
    labels = [names[i] if i < len(names) else str(i) for i in present]
    axis.legend(handles, labels, fontsize=6, markerscale=0.8, loc="best")
    axis.set(title=title, xticks=[], yticks=[])
    return _save(figure, path)
