"""The INT8 stage: calibrate once, write a Q/DQ graph and a calibration cache per method, score each
method on the validation split (never test) and pick the best as the default artifact; then, when
asked, keep layers out of INT8 within an accuracy budget (`make_fallback_artifacts`)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from resnet_deploy import data
from resnet_deploy.errors import ArtifactError
from resnet_deploy.fileio import atomic_write_json, sha256_file
from resnet_deploy.quantize.cache import write_calibration_cache
from resnet_deploy.quantize.calibrate import METHODS, calibrate_all
from resnet_deploy.quantize.fallback import FallbackSettings
from resnet_deploy.quantize.qdq import insert_qdq
from resnet_deploy.trt.compat import DEFAULT_TRT_VERSION


@dataclass(frozen=True)
class Int8Paths:
    """Where the INT8 artifacts of `<stem>.onnx` go in `out_dir`."""

    out_dir: Path
    stem: str

    def qdq(self, method: str) -> Path:
        return self.out_dir / f"{self.stem}.int8-{method}.qdq.onnx"

    def cache(self, method: str) -> Path:
        return self.out_dir / f"{self.stem}.{method}.cache"

    def amax(self, method: str) -> Path:
        return self.out_dir / f"{self.stem}.{method}.amax.json"

    def fallback_qdq(self, method: str) -> Path:
        return self.out_dir / f"{self.stem}.int8-{method}.fallback.qdq.onnx"

    def layer_precisions(self, method: str) -> Path:
        return self.out_dir / f"{self.stem}.int8-{method}.layer-precisions.json"

    def fallback_report(self, method: str) -> Path:
        return self.out_dir / f"{self.stem}.int8-{method}.fallback.json"

    @property
    def qat_fp32(self) -> Path:
        return self.out_dir / f"{self.stem}.qat.onnx"

    @property
    def qat_report(self) -> Path:
        return self.out_dir / f"{self.stem}.qat.json"

    @property
    def cpu_int8(self) -> Path:
        return self.out_dir / f"{self.stem}.int8-cpu.onnx"

    @property
    def summary(self) -> Path:
        return self.out_dir / f"{self.stem}.calibration.json"

    def best_method(self) -> str:
        """The method the calibration summary kept (best validation top-1)."""
        return json.loads(self.summary.read_text())["best_method"]


def validation_top1(onnx_path: Path, images: np.ndarray, labels: np.ndarray, *, simulate_qdq: bool = False) -> float:
    """Top-1 of a graph on ONNX Runtime's CPU provider; `simulate_qdq` for TensorRT-style Q/DQ graphs (see
    `OnnxRuntimeRunner`: the same simulated quantization in about half the time)."""
    from resnet_deploy.parity import collect_logits
    from resnet_deploy.runners.onnxrt import OnnxRuntimeRunner

    with OnnxRuntimeRunner(onnx_path, providers=["CPUExecutionProvider"], simulate_qdq=simulate_qdq) as runner:
        return float((collect_logits(runner, images, 500).argmax(1) == labels).mean())


def make_int8_artifacts(
    fp32_onnx: str | Path,
    out_dir: str | Path = "calibration",
    *,
    methods: Sequence[str] = METHODS,
    count: int = 512,
    seed: int = 0,
    trt_version: str = DEFAULT_TRT_VERSION,
    cpu_int8: bool = False,
    per_channel: bool = True,
    data_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Calibrate `fp32_onnx` on `count` train-split images; returns (and writes) the summary.

    `per_channel=False` quantizes weights with one scale per tensor (a known way to lose accuracy,
    kept to reproduce it); the default is one scale per output channel.
    """
    fp32_onnx = Path(fp32_onnx)
    paths = Int8Paths(Path(out_dir), fp32_onnx.stem)
    started = time.perf_counter()
    images = data.calibration_images(count, seed=seed, data_dir=data_dir)
    dataset = data.load_fashion_mnist(data_dir)
    val_images, val_labels = data.normalize(dataset.val_images), dataset.val_labels
    amax_by_method, timings = calibrate_all(fp32_onnx, images, methods)
    results = {"fp32": {"onnx": str(fp32_onnx), "val_top1": validation_top1(fp32_onnx, val_images, val_labels)}}
    for method, amax in amax_by_method.items():
        qdq = insert_qdq(fp32_onnx, amax, paths.qdq(method), per_channel=per_channel)
        write_calibration_cache(paths.cache(method), amax, trt_version=trt_version)
        atomic_write_json(paths.amax(method), amax)
        results[method] = {
            "onnx": str(paths.qdq(method)),
            "cache": str(paths.cache(method)),
            "amax": str(paths.amax(method)),
            "quantized_activations": qdq["quantized_activations"],
            "val_top1": validation_top1(paths.qdq(method), val_images, val_labels, simulate_qdq=True),
        }
    if cpu_int8:
        from resnet_deploy.quantize.cpu_int8 import quantize_for_cpu

        quantize_for_cpu(fp32_onnx, paths.cpu_int8, images)
        results["cpu"] = {
            "onnx": str(paths.cpu_int8),
            "val_top1": validation_top1(paths.cpu_int8, val_images, val_labels),
        }
    best = max(amax_by_method, key=lambda m: (results[m]["val_top1"], m == "entropy"))
    summary = {
        "source_onnx": str(fp32_onnx),
        "source_onnx_sha256": sha256_file(fp32_onnx),
        "calibration": {"split": "train", "count": count, "seed": seed},
        "weights": "per-channel" if per_channel else "per-tensor",
        "trt_cache_version": trt_version,
        "methods": results,
        "validation": "ONNX Runtime CPU; TensorRT-style Q/DQ graphs with session.disable_quant_qdq (weights folded)",
        "best_method": best,
        "timings": {**timings, "total_seconds": round(time.perf_counter() - started, 3)},
    }
    atomic_write_json(paths.summary, summary)
    return summary


def make_fallback_artifacts(
    fp32_onnx: str | Path,
    out_dir: str | Path,
    settings: FallbackSettings,
    *,
    method: str,
    per_channel: bool = True,
    data_dir: str | Path | None = None,
    log: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """Keep layers out of INT8 for `method`'s ranges (searched on validation, or as named); write the
    fallback Q/DQ graph, the layer precisions for TensorRT 10's legacy path and a report (returned)."""
    from resnet_deploy.onnx_io import load_onnx
    from resnet_deploy.quantize.fallback import QdqEvaluator, layer_precisions, search_fallback, summarize

    fp32_onnx = Path(fp32_onnx)
    paths = Int8Paths(Path(out_dir), fp32_onnx.stem)
    started = time.perf_counter()
    amax = read_amax(paths.amax(method))
    model = load_onnx(fp32_onnx)
    dataset = data.load_fashion_mnist(data_dir)
    validation = QdqEvaluator(
        model, amax, data.normalize(dataset.val_images), dataset.val_labels, per_channel=per_channel
    )
    result = search_fallback(validation, settings, log)
    test = QdqEvaluator(model, amax, data.normalize(dataset.test_images), dataset.test_labels, per_channel=per_channel)
    report = summarize(result, validation, settings, test)
    insert_qdq(fp32_onnx, amax, paths.fallback_qdq(method), fallback=result.fallback, per_channel=per_channel)
    source_sha256 = sha256_file(fp32_onnx)
    atomic_write_json(
        paths.layer_precisions(method),
        layer_precisions(
            model,
            result.fallback,
            source_onnx=fp32_onnx,
            source_sha256=source_sha256,
            calibration_cache=paths.cache(method),
        ),
    )
    report = {
        "source_onnx": str(fp32_onnx),
        "source_onnx_sha256": source_sha256,
        "method": method,
        "weights": "per-channel" if per_channel else "per-tensor",
        "onnx": str(paths.fallback_qdq(method)),
        "layer_precisions": str(paths.layer_precisions(method)),
        **report,
        "seconds": round(time.perf_counter() - started, 3),
    }
    atomic_write_json(paths.fallback_report(method), report)
    return report


def read_amax(path: Path) -> dict[str, float]:
    """Activation ranges written by `make_int8_artifacts`; a missing or malformed file raises `ArtifactError`."""
    try:
        values = json.loads(path.read_text())
        return {str(name): float(value) for name, value in values.items()}
    except (OSError, ValueError, AttributeError, TypeError) as exc:
        raise ArtifactError(
            f"{path}: cannot read activation ranges ({exc}); run `resnet-deploy calibrate` first"
        ) from exc
