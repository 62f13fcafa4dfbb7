"""PyTorch -> ONNX with a dynamic batch axis, checked with the ONNX checker and against PyTorch.

torch 2.13 defaults to the torch.export-based exporter (`dynamo=True`); it emits opset 18 natively
and its down-conversion to 17 fails on ReduceMean (it then falls back to 18 with a traceback), so
opset 17 (for TensorRT 8.x) goes through the deprecated TorchScript exporter instead. Both fold each
BatchNorm into the convolution before it; a pre-activation net keeps the BatchNorms that follow a
residual Add or a conv whose output also feeds the shortcut (TensorRT fuses those as scale layers).
The manifest beside the file records the exporter, its warnings, the BatchNorms left and why, and
the parity against PyTorch.
"""

from __future__ import annotations

import logging
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from resnet_deploy.errors import ArtifactError, GateFailed
from resnet_deploy.fileio import atomic_path, atomic_write_json, check_writable, sha256_file
from resnet_deploy.onnx_io import INPUT_NAME, OUTPUT_NAME

MIN_OPSET = 17
DYNAMO_MIN_OPSET = 18
MAX_BATCH = 4096


def max_opset() -> int:
    """The highest opset both torch's exporter and the installed `onnx` support."""
    import onnx

    try:
        from torch.onnx._constants import ONNX_MAX_OPSET
    except ImportError:  # a torch that moved its private constant: what it is known to emit
        ONNX_MAX_OPSET = DYNAMO_MIN_OPSET
    return min(onnx.defs.onnx_opset_version(), ONNX_MAX_OPSET)


def check_opset(opset: int) -> None:
    """Refuse an opset outside MIN_OPSET..`max_opset()` before any work."""
    highest = max_opset()
    if not MIN_OPSET <= opset <= highest:
        raise ArtifactError(
            f"opset {opset} is outside {MIN_OPSET}..{highest}, the range this torch exporter and onnx support"
        )


def manifest_path(onnx_path: str | Path) -> Path:
    return Path(str(onnx_path) + ".json")


def export_onnx(
    model,
    onnx_path: str | Path,
    *,
    opset: int = DYNAMO_MIN_OPSET,
    check_images: np.ndarray | None = None,
    atol: float = 1e-3,
    source_checkpoint: str | Path | None = None,
) -> dict[str, Any]:
    """Export `model` (eval mode) to `onnx_path` atomically and write its manifest.

    With `check_images` (normalized float32, N x 1 x 28 x 28) the ONNX Runtime output is compared
    with PyTorch's; a max abs logit difference above `atol` or any argmax disagreement raises `GateFailed`.
    """
    import onnx
    import torch

    check_opset(opset)
    onnx_path = Path(onnx_path)
    check_writable(onnx_path, manifest_path(onnx_path))
    model = model.eval()
    channels = getattr(model, "config", {}).get("in_channels", 1)
    example = (torch.zeros(2, channels, 28, 28),)
    started = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught, _quiet_exporter_logs():
        warnings.simplefilter("always")
        with atomic_path(onnx_path) as tmp:
            exporter = _run_exporter(model, example, tmp, opset)
            exported = onnx.load(str(tmp))
            onnx.checker.check_model(exported, full_check=True)
            produced = max(o.version for o in exported.opset_import if o.domain in ("", "ai.onnx"))
            if produced != opset:
                raise ArtifactError(f"{onnx_path}: asked {exporter} for opset {opset}, it produced {produced}")
    export_seconds = time.perf_counter() - started
    manifest = {
        "onnx": str(onnx_path),
        "sha256": sha256_file(onnx_path),
        "source_checkpoint": str(source_checkpoint) if source_checkpoint else None,
        "source_checkpoint_sha256": sha256_file(source_checkpoint) if source_checkpoint else None,
        "model": getattr(model, "config", {}),
        "exporter": f"{exporter}, torch {torch.__version__}",
        "opset": produced,
        "warnings": sorted({str(w.message).splitlines()[0][:300] for w in caught}),
        **batchnorm_summary(exported.graph),
        "node_count": len(exported.graph.node),
        "settings": {
            "opset": opset,
            "atol": atol,
            "batch_range": [1, MAX_BATCH],
            "check_images": None if check_images is None else int(len(check_images)),
        },
        "export_seconds": round(export_seconds, 3),
        "input": {"name": INPUT_NAME, "shape": ["batch", channels, 28, 28], "dtype": "float32"},
        "output": {"name": OUTPUT_NAME, "shape": ["batch", getattr(model, "config", {}).get("num_classes", 10)]},
    }
    if check_images is not None:
        started = time.perf_counter()
        manifest["parity"] = torch_parity(model, onnx_path, check_images, atol)
        manifest["parity_seconds"] = round(time.perf_counter() - started, 3)
    atomic_write_json(manifest_path(onnx_path), manifest)
    if check_images is not None and not manifest["parity"]["passed"]:
        p = manifest["parity"]
        raise GateFailed(
            f"{onnx_path}: ONNX differs from PyTorch: max abs logit diff {p['max_abs_diff']:.2e} "
            f"(tolerance {atol:g}), argmax agreement {p['argmax_agreement'] * 100:.3f}%"
        )
    return manifest


def _run_exporter(model, example: tuple, path: Path, opset: int) -> str:
    """Export with the torch.export-based exporter (opset >= 18) or the TorchScript one (opset 17)."""
    import torch

    common: dict[str, Any] = dict(
        input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], opset_version=opset, verbose=False
    )
    if opset >= DYNAMO_MIN_OPSET:
        torch.onnx.export(
            model,
            example,
            str(path),
            dynamo=True,
            external_data=False,
            dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=MAX_BATCH)},),
            **common,
        )
        return "torch.onnx.export(dynamo=True)"
    torch.onnx.export(
        model,
        example,
        str(path),
        dynamo=False,
        do_constant_folding=True,
        dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
        **common,
    )
    return "torch.onnx.export(dynamo=False) (TorchScript exporter, deprecated; used for opset 17)"


def batchnorm_summary(graph) -> dict[str, Any]:
    """BatchNorms left in the graph, and how many of them could still be folded into a conv.

    A BatchNorm is foldable when its input comes straight from a Conv that feeds nothing else;
    after export there must be none. The others follow an Add or a conv whose output the shortcut
    also reads (pre-activation nets), which no conv weight can absorb.
    """
    producers = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            consumers[name] = consumers.get(name, 0) + 1
    outputs = {value.name for value in graph.output}
    batchnorms = [node for node in graph.node if node.op_type == "BatchNormalization"]
    foldable = [
        node.name
        for node in batchnorms
        if (src := producers.get(node.input[0])) is not None
        and src.op_type == "Conv"
        and consumers.get(node.input[0], 0) == 1
        and node.input[0] not in outputs
    ]
    note = (
        "all BatchNorms folded into the preceding conv"
        if not batchnorms
        else f"{len(batchnorms)} BatchNorms kept where no conv directly precedes them alone "
        "(after a residual Add or a shared conv output, as in pre-activation nets)"
    )
    return {
        "batchnorm_nodes": len(batchnorms),
        "batchnorm_foldable_left": foldable,
        "bn_folded": not foldable,
        "batchnorm_note": note,
    }


def torch_parity(model, onnx_path: Path, images: np.ndarray, atol: float, batch_size: int = 500) -> dict[str, Any]:
    """Max abs logit difference and argmax agreement of ONNX Runtime vs PyTorch on `images`."""
    import torch

    from resnet_deploy.runners.onnxrt import OnnxRuntimeRunner

    with torch.inference_mode():
        reference = np.concatenate(
            [model(torch.from_numpy(images[i : i + batch_size])).numpy() for i in range(0, len(images), batch_size)]
        )
    with OnnxRuntimeRunner(onnx_path, providers=["CPUExecutionProvider"]) as runner:
        candidate = np.concatenate(
            [
                runner.infer({INPUT_NAME: images[i : i + batch_size]})[OUTPUT_NAME]
                for i in range(0, len(images), batch_size)
            ]
        )
    max_abs = float(np.abs(reference - candidate).max())
    agreement = float((reference.argmax(1) == candidate.argmax(1)).mean())
    return {
        "images": int(len(images)),
        "max_abs_diff": max_abs,
        "argmax_agreement": agreement,
        "atol": atol,
        "passed": max_abs <= atol and agreement == 1.0,
    }


class _quiet_exporter_logs:
    """The dynamo exporter logs progress lines at WARNING; keep them out of the user's terminal."""

    def __enter__(self):
        self._logger = logging.getLogger("torch.onnx")
        self._level = self._logger.level
        self._logger.setLevel(logging.ERROR)

    def __exit__(self, *exc_info):
        self._logger.setLevel(self._level)
