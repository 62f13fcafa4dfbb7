"""Layer-by-layer comparison of two graphs of one network: FP32 against FP16, Q/DQ or fallback graphs.

Both graphs run on the same validation images in ONNX Runtime (CPU, graph optimizations off, so a
Q/DQ graph computes exactly its fake-quantized arithmetic) with intermediate tensors exposed as
outputs. Tensors are matched by name (the FP16 converter, the Q/DQ inserter and the fallback keep
the FP32 graph's names), else by the name of the node that produces them. Per tensor: cosine
similarity, SNR in dB (signal energy over error energy) and max abs error, accumulated in float64
over batches. Memory stays bounded for any depth: the tensors are exposed a chunk at a time, sized
so that one batch of one chunk (both graphs) fits `max_memory_mib`, and images stream in batches
(as few chunks as the bound allows, then as large a batch as keeps that number).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, cast

import numpy as np

from resnet_deploy.errors import ArtifactError
from resnet_deploy.quantize.calibrate import ACTIVATION_OPS
from resnet_deploy.quantize.qdq import quantizable_layers
from resnet_deploy.runners.onnxrt import cpu_session

FLOAT_TYPES = {1: np.float32, 10: np.float16, 11: np.float64}
SLICE_ELEMENTS = 1 << 20
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class TensorMatch:
    """One compared tensor: its name in each graph, the FP32 node that makes it, its size per image."""

    index: int
    reference: str
    candidate: str
    op_type: str
    node: str
    layer: str | None
    bytes_per_image: int


@dataclass
class ErrorStats:
    """Running sums for cosine, SNR and max abs error of candidate against reference."""

    dot: float = 0.0
    reference_energy: float = 0.0
    candidate_energy: float = 0.0
    error_energy: float = 0.0
    max_abs_error: float = 0.0
    elements: int = 0

    def update(self, reference: np.ndarray, candidate: np.ndarray) -> None:
        reference, candidate = reference.reshape(-1), candidate.reshape(-1)
        for start in range(0, reference.size, SLICE_ELEMENTS):
            ref = reference[start : start + SLICE_ELEMENTS].astype(np.float64)
            cand = candidate[start : start + SLICE_ELEMENTS].astype(np.float64)
            error = ref - cand
            self.dot += float(ref @ cand)
            self.reference_energy += float(ref @ ref)
            self.candidate_energy += float(cand @ cand)
            self.error_energy += float(error @ error)
            if error.size:
                self.max_abs_error = max(self.max_abs_error, float(np.abs(error).max()))
        self.elements += reference.size

    @property
    def cosine(self) -> float:
        norm = math.sqrt(self.reference_energy * self.candidate_energy)
        return self.dot / norm if norm > 0 else float(self.error_energy == 0)

    @property
    def snr_db(self) -> float:
        if self.error_energy == 0:
            return math.inf
        return 10 * math.log10(self.reference_energy / self.error_energy) if self.reference_energy > 0 else -math.inf


def value_types_and_sizes(model) -> tuple[dict[str, int], dict[str, int | None]]:
    """Element type of every tensor and its element count per image (None where a dim is unknown)."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    types, sizes = {}, {}
    for value in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
        tensor_type = value.type.tensor_type
        types[value.name] = tensor_type.elem_type
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor_type.shape.dim][1:]
        unknown = not tensor_type.HasField("shape") or None in dims
        sizes[value.name] = None if unknown else int(np.prod(cast(list[int], dims), dtype=np.int64))  # no None left
    return types, sizes


def compared_tensors(reference_model) -> list[tuple[str, Any]]:
    """(tensor, producing node) of every activation the reference graph computes, in graph order."""
    return [(node.output[0], node) for node in reference_model.graph.node if node.op_type in ACTIVATION_OPS]


def match_tensors(reference_model, candidate_model) -> tuple[list[TensorMatch], list[str]]:
    """Reference activations matched to candidate tensors (by name, else by producing node); and the unmatched."""
    candidate_tensors = {out for node in candidate_model.graph.node for out in node.output}
    candidate_nodes = {node.name: node for node in candidate_model.graph.node if node.name}
    layer_names = {layer.node: layer.name for layer in quantizable_layers(reference_model)}
    types, sizes = value_types_and_sizes(reference_model)
    known = [s for s in sizes.values() if s]
    fallback_size = max(known) if known else 1 << 20
    matches: list[TensorMatch] = []
    unmatched: list[str] = []
    for tensor, node in compared_tensors(reference_model):
        candidate = tensor if tensor in candidate_tensors else None
        twin = candidate_nodes.get(node.name)
        if candidate is None and twin is not None and twin.op_type == node.op_type:
            candidate = twin.output[0]
        if candidate is None or types.get(tensor, 1) not in FLOAT_TYPES:
            unmatched.append(tensor)
            continue
        size = sizes.get(tensor) or fallback_size
        matches.append(
            TensorMatch(
                len(matches), tensor, candidate, node.op_type, node.name, layer_names.get(node.name), int(size) * 4
            )
        )
    return matches, unmatched


def check_same_model(
    matches: list[TensorMatch],
    reference_sizes: dict[str, int | None],
    candidate_sizes: dict[str, int | None],
    reference: Path,
    candidate: Path,
) -> None:
    """Refuse two graphs of different models (another width, depth or input): the first matched
    tensor whose size per image differs, or no matched tensor at all, raises `ArtifactError`."""
    if not matches:
        raise ArtifactError(
            f"{reference} and {candidate}: no layer of one matches a layer of the other "
            "(different models?); compare a graph with one derived from it"
        )
    for match in matches:
        ours, theirs = reference_sizes.get(match.reference), candidate_sizes.get(match.candidate)
        if ours and theirs and ours != theirs:
            raise ArtifactError(
                f"{reference} and {candidate} are different models: {match.reference} ({match.op_type}"
                f"{', ' + match.layer if match.layer else ''}) has {ours} values per image in "
                f"{reference.name} and {theirs} in {candidate.name} (another width, depth or input)"
            )


def _convolutions(model) -> int:
    return sum("Conv" in node.op_type for node in model.graph.node)


def check_same_depth(reference_model, candidate_model, reference: Path, candidate: Path) -> None:
    """Refuse two graphs with different numbers of convolutions (FP16, Q/DQ and fallback graphs keep them all)."""
    ours, theirs = _convolutions(reference_model), _convolutions(candidate_model)
    if ours != theirs:
        raise ArtifactError(
            f"{reference} and {candidate} are different models: {ours} convolutions in "
            f"{reference.name}, {theirs} in {candidate.name} (another depth)"
        )


def plan_chunks(matches: list[TensorMatch], batch_size: int, max_bytes: int) -> tuple[int, list[list[TensorMatch]]]:
    """A batch size and groups of tensors such that one batch of one group, in both graphs, fits `max_bytes`.

    Every group costs one pass over the images, so the plan first takes the fewest groups (those of
    batch 1), then the largest batch up to `batch_size` that keeps that number. Candidate tensors
    count at float32 size too (FP16 ones are converted before comparing).
    """
    fewest = len(_pack(matches, 1, max_bytes))
    batch = batch_size
    while batch > 1 and len(_pack(matches, batch, max_bytes)) > fewest:
        batch //= 2
    return batch, _pack(matches, batch, max_bytes)


def _pack(matches: list[TensorMatch], batch: int, max_bytes: int) -> list[list[TensorMatch]]:
    chunks: list[list[TensorMatch]] = [[]]
    used = 0
    for match in matches:
        cost = 2 * match.bytes_per_image * batch
        if chunks[-1] and used + cost > max_bytes:
            chunks.append([])
            used = 0
        chunks[-1].append(match)
        used += cost
    return chunks


def session_with_outputs(model, names: list[str], types: dict[str, int], threads: int = 0):
    """An ONNX Runtime CPU session, graph optimizations off, returning exactly the tensors `names`.

    The outputs of `model` are swapped in place and restored, so no copy of its weights is made.
    """
    import onnx

    original = [onnx.ValueInfoProto.FromString(v.SerializeToString()) for v in model.graph.output]
    del model.graph.output[:]
    model.graph.output.extend(
        onnx.helper.make_tensor_value_info(name, types.get(name, onnx.TensorProto.FLOAT), None) for name in names
    )
    try:
        serialized = model.SerializeToString()
    finally:
        del model.graph.output[:]
        model.graph.output.extend(original)
    return cpu_session(serialized, optimize=False, threads=threads)


@dataclass
class LayerComparison:
    """The rows (one per matched tensor, graph order) and how the comparison ran."""

    rows: list[dict[str, Any]]
    unmatched: list[str]
    batch_size: int
    chunks: int
    peak_output_bytes: int
    seconds: float
    first_below: dict[str, Any] | None = None
    settings: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "settings": self.settings,
            "first_below": self.first_below,
            "unmatched": self.unmatched,
            "batch_size": self.batch_size,
            "chunks": self.chunks,
            "peak_output_bytes": self.peak_output_bytes,
            "seconds": self.seconds,
            "rows": self.rows,
        }


def compare_layers(
    reference_onnx: str | Path,
    candidate_onnx: str | Path,
    images: np.ndarray,
    *,
    batch_size: int = 64,
    max_memory_mib: float = 512,
    min_snr_db: float = 20.0,
    min_cosine: float = 0.99,
    threads: int = 0,
    progress: Progress | None = None,
) -> LayerComparison:
    """Compare every matched activation of `candidate_onnx` with `reference_onnx` on `images`."""
    from resnet_deploy.onnx_io import load_onnx

    started = time.perf_counter()
    reference_model, candidate_model = load_onnx(reference_onnx), load_onnx(candidate_onnx)
    matches, unmatched = match_tensors(reference_model, candidate_model)
    batch, chunks = plan_chunks(matches, batch_size, int(max_memory_mib * 2**20))
    stats = {m.reference: ErrorStats() for m in matches}
    input_name = next(
        v.name for v in reference_model.graph.input if v.name not in {i.name for i in reference_model.graph.initializer}
    )
    (reference_types, reference_sizes), (candidate_types, candidate_sizes) = (
        value_types_and_sizes(m) for m in (reference_model, candidate_model)
    )
    check_same_depth(reference_model, candidate_model, Path(reference_onnx), Path(candidate_onnx))
    check_same_model(matches, reference_sizes, candidate_sizes, Path(reference_onnx), Path(candidate_onnx))
    peak = 0
    for done, chunk in enumerate(chunks):
        reference = session_with_outputs(reference_model, [m.reference for m in chunk], reference_types, threads)
        candidate = session_with_outputs(candidate_model, [m.candidate for m in chunk], candidate_types, threads)
        for start in range(0, len(images), batch):
            feed = {input_name: images[start : start + batch]}
            ref_values, cand_values = reference.run(None, feed), candidate.run(None, feed)
            peak = max(peak, sum(v.nbytes for v in ref_values) + sum(v.nbytes for v in cand_values))
            for match, ref, cand in zip(chunk, ref_values, cand_values):
                stats[match.reference].update(ref, cand)
            del ref_values, cand_values
        del reference, candidate
        if progress:
            progress(done + 1, len(chunks))
    rows = [_row(m, stats[m.reference], min_snr_db, min_cosine) for m in matches]
    settings = {
        "reference": str(reference_onnx),
        "candidate": str(candidate_onnx),
        "images": int(len(images)),
        "min_snr_db": min_snr_db,
        "min_cosine": min_cosine,
        "max_memory_mib": max_memory_mib,
        "optimizations": "ONNX Runtime CPU, graph optimizations disabled",
    }
    return LayerComparison(
        rows,
        unmatched,
        batch,
        len(chunks),
        peak,
        round(time.perf_counter() - started, 3),
        next((r for r in rows if r["below"]), None),
        settings,
    )


def _row(match: TensorMatch, stats: ErrorStats, min_snr_db: float, min_cosine: float) -> dict[str, Any]:
    snr = stats.snr_db
    return {
        "index": match.index,
        "tensor": match.reference,
        "candidate_tensor": match.candidate,
        "op_type": match.op_type,
        "node": match.node,
        "layer": match.layer,
        "cosine": stats.cosine,
        "snr_db": snr if math.isfinite(snr) else None,
        "max_abs_error": stats.max_abs_error,
        "elements": stats.elements,
        "below": bool(snr < min_snr_db or stats.cosine < min_cosine),
    }


def plot_snr(comparison: LayerComparison, png_path: str | Path, title: str) -> Path | None:
    """SNR by depth (graph order), one marker per op type, threshold line; None without matplotlib."""
    from resnet_deploy.plots import _pyplot, _save

    plt = _pyplot()
    if plt is None:
        return None
    from resnet_deploy.fileio import atomic_path

    rows = comparison.rows
    finite = [r["snr_db"] for r in rows if r["snr_db"] is not None]
    ceiling = max(finite, default=0.0) + 10
    fig, ax = plt.subplots(figsize=(max(6.0, len(rows) / 8), 4))
    for op_type in dict.fromkeys(r["op_type"] for r in rows):
        picked = [r for r in rows if r["op_type"] == op_type]
        ax.plot(
            [r["index"] for r in picked],
            [r["snr_db"] if r["snr_db"] is not None else ceiling for r in picked],
            "o",
            markersize=3,
            label=op_type,
        )
    ax.plot(
        [r["index"] for r in rows],
        [r["snr_db"] if r["snr_db"] is not None else ceiling for r in rows],
        "-",
        color="grey",
        linewidth=0.5,
    )
    ax.axhline(comparison.settings["min_snr_db"], color="red", linestyle="--", linewidth=1, label="threshold")
    if comparison.first_below:
        ax.axvline(comparison.first_below["index"], color="red", linewidth=0.8, alpha=0.5)
    ax.set_xlabel("layer output (graph order)")
    ax.set_ylabel("SNR vs reference (dB)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return _save(fig, Path(png_path), atomic_path, plt)
