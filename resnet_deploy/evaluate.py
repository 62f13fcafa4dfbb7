"""Top-1, per-class accuracy and the confusion matrix on the 10k test split; top-k predictions."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np


def softmax(logits: np.ndarray) -> np.ndarray:
    """Class probabilities of float logits (N, classes), computed stably."""
    shifted = np.exp(logits - logits.max(1, keepdims=True))
    return shifted / shifted.sum(1, keepdims=True)


def top_k(logits: np.ndarray, class_names: Sequence[str], k: int) -> list[list[dict[str, Any]]]:
    """Per image, the `k` most probable classes: index, name and probability, most probable first."""
    probabilities = softmax(logits.astype(np.float64))
    order = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
    return [
        [{"index": int(c), "class": class_names[c], "probability": float(p[c])} for c in row]
        for row, p in zip(order, probabilities)
    ]


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """Rows are true classes, columns predicted classes."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (labels, predictions), 1)
    return matrix


def classification_report(labels: np.ndarray, logits: np.ndarray, class_names: Sequence[str]) -> dict[str, Any]:
    """Top-1, per-class accuracy and confusion matrix as a JSON-able dict."""
    predictions = logits.argmax(1)
    matrix = confusion_matrix(labels, predictions, len(class_names))
    per_class = matrix.diagonal() / np.maximum(matrix.sum(1), 1)
    return {
        "count": int(len(labels)),
        "top1": float((predictions == labels).mean()),
        "per_class": {name: float(acc) for name, acc in zip(class_names, per_class)},
        "confusion_matrix": matrix.tolist(),
        "class_names": list(class_names),
    }


def plot_confusion(report: dict[str, Any], png_path: str | Path, title: str) -> Path | None:
    """Write the confusion matrix as a PNG; returns None when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    from resnet_deploy.fileio import atomic_path

    matrix = np.array(report["confusion_matrix"])
    names = report["class_names"]
    fig, ax = plt.subplots(figsize=(8, 7))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{title}: top-1 {report['top1'] * 100:.2f}%")
    threshold = matrix.max() / 2
    for (row, col), value in np.ndenumerate(matrix):
        ax.text(
            col, row, str(value), ha="center", va="center", fontsize=7, color="white" if value > threshold else "black"
        )
    fig.tight_layout()
    with atomic_path(png_path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return Path(png_path)
