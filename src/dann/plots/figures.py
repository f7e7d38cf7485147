"""Figures: domains scattered in 2-D, feature embeddings, training curves, image grids."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
import numpy as np  # noqa: E402

DOMAIN_MARKERS = {"source": "o", "target": "x"}  # any further domain: "+"


def scatter_domains(
    points: dict[str, np.ndarray], labels: dict[str, np.ndarray | None], path: str | Path, title: str
) -> None:
    """2-D points of each domain (``points["source"]``, ``points["target"]``, ...), coloured by class, marked by domain.

    A domain without labels (``labels[d] is None``) is drawn in grey.
    """
    fig, ax = plt.subplots(figsize=(5.5, 5))
    n_classes = int(max((y.max() for y in labels.values() if y is not None), default=0)) + 1
    cmap = plt.get_cmap("tab10", max(n_classes, 2))
    for domain, xy in points.items():
        colour = {"color": "0.5"} if labels[domain] is None else {"c": labels[domain], "cmap": cmap, "vmin": -0.5, "vmax": n_classes - 0.5}
        ax.scatter(
            xy[:, 0], xy[:, 1], **colour,
            marker=DOMAIN_MARKERS.get(domain, "+"), s=12, alpha=0.6, linewidths=0.8, label=domain,
        )
    legend = ax.legend(loc="best", title="domain (colour = class)")
    for handle in legend.legend_handles:
        handle.set_color("0.3")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def mode_colours(modes: Sequence[str]) -> dict[str, tuple[float, float, float, float]]:
    """One fixed colour per mode, by position in ``modes`` (tab10, tab20 beyond ten modes)."""
    cmap = plt.get_cmap("tab10" if len(modes) <= 10 else "tab20")
    return {mode: cmap(i % cmap.N) for i, mode in enumerate(modes)}


def training_curves(rows_by_mode: dict[str, list[dict]], path: str | Path) -> dict[str, dict[str, Line2D]]:
    """One panel per logged quantity (lr, lambda, losses, accuracies) against step, one line per mode.

    Each mode keeps one colour in every panel (:func:`mode_colours`, in the order of
    ``rows_by_mode``), also in panels where other modes have no data, and one legend for the
    figure lists every mode. Returns the drawn lines, ``{panel key: {mode: line}}``.
    """
    keys = ["lr", "lambda", "label_loss", "domain_loss", "label_acc", "discriminator_acc", "source_acc", "target_acc", "domain_acc"]
    present = [k for k in keys if any(k in row for rows in rows_by_mode.values() for row in rows)]
    colours = mode_colours(list(rows_by_mode))
    cols = 4
    n_rows = max((len(present) + cols - 1) // cols, 1)
    fig, axes = plt.subplots(n_rows, cols, figsize=(4 * cols, 3 * n_rows + 0.5), squeeze=False, layout="constrained")
    lines: dict[str, dict[str, Line2D]] = {}
    for ax, key in zip(axes.flat, present):
        lines[key] = {}
        for mode, rows in rows_by_mode.items():
            pts = [(r["step"], r[key]) for r in rows if key in r]
            if pts:
                steps, values = zip(*pts)
                # a lone point (one row logged: a short run) is invisible as a line
                marker = "o" if len(pts) == 1 else None
                (lines[key][mode],) = ax.plot(steps, values, color=colours[mode], label=mode, marker=marker)
        ax.set_title(key)
        ax.set_xlabel("step")
    for ax in list(axes.flat)[len(present):]:
        ax.axis("off")
    handles = [Line2D([], [], color=colour, label=mode) for mode, colour in colours.items()]
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 6) or 1, fontsize=8)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return lines


def image_grid(rows: Sequence[tuple[str, np.ndarray]], path: str | Path) -> None:
    """Rows of images (each ``(N, H, W)`` or ``(N, H, W, 3)`` uint8), one titled row per domain."""
    n = max(len(images) for _, images in rows)
    fig, axes = plt.subplots(len(rows), n, figsize=(n * 0.9, len(rows) * 1.0), squeeze=False)
    for r, (title, images) in enumerate(rows):
        for c in range(n):
            ax = axes[r, c]
            ax.axis("off")
            if c < len(images):
                ax.imshow(images[c], cmap="gray" if images[c].ndim == 2 else None, vmin=0, vmax=255)
        axes[r, 0].set_title(title, loc="left", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
