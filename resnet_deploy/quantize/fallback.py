"""Accuracy-budgeted INT8: keep the fewest layers out of INT8 that bring validation within a budget.

Sensitivity is measured on the user's validation split (never test) with ONNX Runtime running the
Q/DQ graphs TensorRT would build: each quantized layer is put back in high precision alone (its
Q/DQ removed) and the gain in top-1 agreement with FP32 and in top-1 is recorded. Layers then
leave INT8 most sensitive first until the budget holds, and a final pass puts back into INT8 every
layer the budget does not need. Sensitivity ranks by agreement gain (then top-1 gain, then fewer
MACs) whatever the budget: a layer's top-1 gain is the difference of images it fixes and images it
breaks, so on a few thousand images it is mostly noise, while agreement counts every change. The result is an ordinary Q/DQ
graph (TensorRT 10 and 11 build it strongly typed) plus the same exclusions as layer precisions
for TensorRT 10's legacy path (FP32 ONNX + calibration cache + builder flags).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from resnet_deploy.errors import ResnetDeployError
from resnet_deploy.quantize.qdq import FALLBACKS, Layer, qdq_model, quantizable_layers, resolve_layers
from resnet_deploy.runners.onnxrt import cpu_session

LAYER_PRECISIONS_FORMAT = "resnet-deploy.layer-precisions/1"
TRT_DATA_TYPES = {"fp16": "HALF", "fp32": "FLOAT"}
Log = Callable[[str], None]


@dataclass(frozen=True)
class FallbackSettings:
    """What to keep out of INT8: a budget to search for, and/or layers named by the user."""

    accuracy_budget_pp: float | None = None
    min_agreement_pct: float | None = None
    fallback: str = "fp16"
    exclude: tuple[str, ...] = ()
    keep_fp32: tuple[str, ...] = ()

    def __post_init__(self):
        if self.fallback not in FALLBACKS:
            raise ResnetDeployError(f"--fallback must be one of {FALLBACKS}, got {self.fallback!r}")
        if self.accuracy_budget_pp is not None and self.accuracy_budget_pp < 0:
            raise ResnetDeployError(f"--accuracy-budget must be >= 0 pp, got {self.accuracy_budget_pp}")
        if self.min_agreement_pct is not None and not 0 < self.min_agreement_pct <= 100:
            raise ResnetDeployError(f"--min-agreement must be in (0, 100] %, got {self.min_agreement_pct}")

    @property
    def active(self) -> bool:
        return bool(self.searches or self.exclude or self.keep_fp32)

    @property
    def searches(self) -> bool:
        return self.accuracy_budget_pp is not None or self.min_agreement_pct is not None

    def manual(self, model) -> dict[str, str]:
        """Node name -> precision of the layers the user named (`--keep-fp32` wins over `--exclude`)."""
        chosen = {node: self.fallback for node in resolve_layers(model, self.exclude)}
        chosen.update({node: "fp32" for node in resolve_layers(model, self.keep_fp32)})
        return chosen


@dataclass(frozen=True)
class Score:
    top1: float
    agreement: float


class QdqEvaluator:
    """Top-1 and FP32 agreement of Q/DQ variants of one FP32 graph on fixed images (cached per variant)."""

    def __init__(
        self,
        model,
        amax: Mapping[str, float],
        images: np.ndarray,
        labels: np.ndarray,
        *,
        per_channel: bool = True,
        batch_size: int = 500,
    ):
        self.model, self.amax, self.per_channel = model, amax, per_channel
        self.images, self.labels, self.batch_size = images, labels, batch_size
        self.reference = self._logits(model).argmax(1)
        self.cache: dict[frozenset, Score] = {}

    def _logits(self, model) -> np.ndarray:
        session = cpu_session(model.SerializeToString())
        name = session.get_inputs()[0].name
        return np.concatenate(
            [
                session.run(None, {name: self.images[i : i + self.batch_size]})[0]
                for i in range(0, len(self.images), self.batch_size)
            ]
        )

    @property
    def fp32_top1(self) -> float:
        return float((self.reference == self.labels).mean())

    def score(self, fallback: Mapping[str, str]) -> Score:
        key = frozenset(fallback.items())
        if key not in self.cache:
            self.cache[key] = self.score_model(
                qdq_model(self.model, self.amax, fallback=fallback, per_channel=self.per_channel)
            )
        return self.cache[key]

    def score_model(self, model) -> Score:
        """Top-1 and agreement with the FP32 graph of any graph of the same network."""
        predictions = self._logits(model).argmax(1)
        return Score(float((predictions == self.labels).mean()), float((predictions == self.reference).mean()))


@dataclass(frozen=True)
class Budget:
    """Validation top-1 may drop at most `max_drop_pp` below FP32; agreement with FP32 at least `min_agreement_pct`."""

    max_drop_pp: float | None
    min_agreement_pct: float | None

    def met(self, score: Score, fp32_top1: float) -> bool:
        drop_ok = self.max_drop_pp is None or (fp32_top1 - score.top1) * 100 <= self.max_drop_pp + 1e-9
        agreement_ok = self.min_agreement_pct is None or score.agreement * 100 >= self.min_agreement_pct - 1e-9
        return drop_ok and agreement_ok


def layer_macs(model) -> dict[str, int]:
    """Multiply-accumulates per image of each Conv/Gemm node (output elements x weights per output)."""
    from resnet_deploy.quantize.layers import value_types_and_sizes

    _, sizes = value_types_and_sizes(model)
    weights = {init.name: init.dims for init in model.graph.initializer}
    macs = {}
    for node in model.graph.node:
        if node.op_type in ("Conv", "Gemm") and node.input[1] in weights:
            dims = list(weights[node.input[1]])
            if node.op_type == "Gemm":
                macs[node.name] = int(np.prod(dims))
            else:
                outputs = sizes.get(node.output[0]) or dims[0]
                macs[node.name] = int(outputs * int(np.prod(dims[1:])))
    return macs


@dataclass
class FallbackResult:
    """The chosen exclusions and everything measured on the way."""

    fallback: dict[str, str]
    scores: dict[str, Score]
    sensitivity: list[dict[str, Any]] = field(default_factory=list)
    steps: list[dict[str, Any]] = field(default_factory=list)
    evaluations: int = 0
    seconds: float = 0.0


def search_fallback(evaluator: QdqEvaluator, settings: FallbackSettings, log: Log = lambda _: None) -> FallbackResult:
    """Exclusions from INT8 that meet the budget, most sensitive layers first, then pruned."""
    started = time.perf_counter()
    manual = settings.manual(evaluator.model)
    budget = Budget(settings.accuracy_budget_pp, settings.min_agreement_pct)
    scores = {"ptq": evaluator.score({}), "manual": evaluator.score(manual)}
    result = FallbackResult(dict(manual), scores)
    if not settings.searches or budget.met(scores["manual"], evaluator.fp32_top1):
        return _finish(result, evaluator, started)
    chosen, added = dict(manual), []
    for layer in _rank_by_sensitivity(evaluator, settings, manual, result, log):
        chosen[layer.node] = settings.fallback
        added.append(layer)
        score = evaluator.score(chosen)
        result.steps.append(_step("exclude", layer, score))
        log(f"  exclude {layer.name}: val top-1 {score.top1 * 100:.2f}%, agreement {score.agreement * 100:.2f}%")
        if budget.met(score, evaluator.fp32_top1):
            result.fallback = _prune(evaluator, budget, chosen, added[:-1], result, log)
            return _finish(result, evaluator, started)
    result.fallback = chosen
    return _finish(result, evaluator, started)


def _rank_by_sensitivity(
    evaluator: QdqEvaluator, settings: FallbackSettings, manual: dict[str, str], result: FallbackResult, log: Log
) -> list[Layer]:
    """The layers not named by hand, each scored back in high precision alone; most helpful first."""
    macs = layer_macs(evaluator.model)
    candidates = [layer for layer in quantizable_layers(evaluator.model) if layer.node not in manual]
    base = result.scores["manual"]
    gains = {}
    for number, layer in enumerate(candidates, 1):
        score = evaluator.score({**manual, layer.node: settings.fallback})
        gains[layer.node] = (score.agreement - base.agreement, score.top1 - base.top1)
        result.sensitivity.append(_sensitivity_row(layer, score, base, macs))
        log(
            f"  sensitivity {number}/{len(candidates)}: {layer.name} back in {settings.fallback}: "
            f"val top-1 {score.top1 * 100:.2f}%, agreement {score.agreement * 100:.2f}%"
        )
    return sorted(candidates, key=lambda layer: (-gains[layer.node][0], -gains[layer.node][1], macs.get(layer.node, 0)))


def _prune(
    evaluator: QdqEvaluator,
    budget: Budget,
    chosen: dict[str, str],
    removable: list[Layer],
    result: FallbackResult,
    log: Log,
) -> dict[str, str]:
    """Put back into INT8, last excluded first, every layer the budget holds without."""
    for layer in reversed(removable):
        trial = {node: precision for node, precision in chosen.items() if node != layer.node}
        score = evaluator.score(trial)
        if budget.met(score, evaluator.fp32_top1):
            chosen = trial
            result.steps.append(_step("restore", layer, score))
            log(
                f"  back to INT8 {layer.name}: val top-1 {score.top1 * 100:.2f}%, agreement {score.agreement * 100:.2f}%"
            )
    return chosen


def _finish(result: FallbackResult, evaluator: QdqEvaluator, started: float) -> FallbackResult:
    result.scores["fallback"] = evaluator.score(result.fallback)
    result.evaluations = len(evaluator.cache)
    result.seconds = round(time.perf_counter() - started, 3)
    return result


def _sensitivity_row(layer: Layer, score: Score, base: Score, macs: dict[str, int]) -> dict[str, Any]:
    return {
        "layer": layer.name,
        "node": layer.node,
        "op_type": layer.op_type,
        "macs": macs.get(layer.node, 0),
        "val_top1": score.top1,
        "val_agreement": score.agreement,
        "top1_gain_pp": round((score.top1 - base.top1) * 100, 3),
        "agreement_gain_pp": round((score.agreement - base.agreement) * 100, 3),
    }


def _step(action: str, layer: Layer, score: Score) -> dict[str, Any]:
    return {
        "action": action,
        "layer": layer.name,
        "node": layer.node,
        "val_top1": score.top1,
        "val_agreement": score.agreement,
    }


def int8_mac_share(macs: Mapping[str, int], fallback: Mapping[str, str]) -> float:
    total = sum(macs.values())
    return sum(m for node, m in macs.items() if node not in fallback) / total if total else 1.0


def layer_precisions(
    model,
    fallback: Mapping[str, str],
    *,
    source_onnx: str | Path,
    source_sha256: str,
    calibration_cache: str | Path | None,
) -> dict[str, Any]:
    """The exclusions for TensorRT 10's legacy path (FP32 ONNX + INT8 flag + calibration cache).

    A TensorRT 10 builder applies them after parsing the FP32 ONNX: for every network layer whose
    name is a listed `name` (TensorRT's ONNX parser names a layer after its ONNX node), set
    `layer.precision = trt.DataType.<trt_type>` and `layer.set_output_type(i, trt.DataType.<trt_type>)`
    for each output, and set the listed `builder_flags` (OBEY_PRECISION_CONSTRAINTS makes them
    binding). `trtexec_args` says the same to trtexec.
    """
    by_node = {layer.node: layer for layer in quantizable_layers(model)}
    rows = [
        {
            "name": node,
            "layer": by_node[node].name,
            "op_type": by_node[node].op_type,
            "precision": precision,
            "trt_type": TRT_DATA_TYPES[precision],
        }
        for node, precision in fallback.items()
    ]
    flags = ["INT8", *(["FP16"] if "fp16" in fallback.values() else []), "OBEY_PRECISION_CONSTRAINTS"]
    spec = ",".join(f"{row['name']}:{row['precision']}" for row in rows)
    trtexec = ["--int8", *(["--fp16"] if "fp16" in fallback.values() else []), "--precisionConstraints=obey"]
    if spec:
        trtexec += [f"--layerPrecisions={spec}", f"--layerOutputTypes={spec}"]
    return {
        "format": LAYER_PRECISIONS_FORMAT,
        "source_onnx": str(source_onnx),
        "source_onnx_sha256": source_sha256,
        "calibration_cache": str(calibration_cache) if calibration_cache else None,
        "default_precision": "int8",
        "builder_flags": flags,
        "layers": rows,
        "trtexec_args": " ".join(trtexec),
    }


@dataclass(frozen=True)
class LayerPrecisions:
    """A layer-precisions file as read: the FP32 ONNX it was made for and layer name -> fp16 or fp32."""

    path: Path
    source_onnx_sha256: str
    layers: dict[str, str]

    @property
    def needs_fp16(self) -> bool:
        return "fp16" in self.layers.values()


def read_layer_precisions(path: str | Path) -> LayerPrecisions:
    """Read and check a layer-precisions file; a malformed one raises `ArtifactError` naming it."""
    import json
    import re
    from collections import Counter

    from resnet_deploy.errors import ArtifactError

    path = Path(path)
    try:
        spec = json.loads(path.read_text())
        if spec.get("format") != LAYER_PRECISIONS_FORMAT:
            raise ValueError(f"format is {spec.get('format')!r}, expected {LAYER_PRECISIONS_FORMAT!r}")
        sha256 = spec["source_onnx_sha256"]
        if not isinstance(sha256, str) or not re.fullmatch(r"[0-9a-f]{64}", sha256):
            raise ValueError(f"source_onnx_sha256 {sha256!r} is not a SHA-256 hex digest")
        rows = [(str(row["name"]), str(row["precision"])) for row in spec["layers"]]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ArtifactError(f"{path}: not a layer-precisions file: {exc}") from exc
    layers = dict(rows)
    if len(layers) != len(rows):
        twice = sorted(name for name, count in Counter(name for name, _ in rows).items() if count > 1)
        raise ArtifactError(f"{path}: layers {', '.join(twice)} are listed more than once")
    bad = sorted(name for name, precision in layers.items() if precision not in TRT_DATA_TYPES)
    if bad:
        raise ArtifactError(f"{path}: layers {', '.join(bad)} have a precision other than {', '.join(TRT_DATA_TYPES)}")
    return LayerPrecisions(path, sha256, layers)


def summarize(
    result: FallbackResult, evaluator: QdqEvaluator, settings: FallbackSettings, test: QdqEvaluator | None = None
) -> dict[str, Any]:
    """The JSON report: budget, excluded layers, INT8 MAC share, validation (and test) top-1 before and after."""
    model = evaluator.model
    macs = layer_macs(model)
    by_node = {layer.node: layer for layer in quantizable_layers(model)}
    fp32 = evaluator.fp32_top1
    budget = Budget(settings.accuracy_budget_pp, settings.min_agreement_pct)
    splits = {"validation": (evaluator, result.scores)}
    if test is not None:
        splits["test"] = (
            test,
            {name: test.score(result.fallback if name == "fallback" else {}) for name in ("ptq", "fallback")},
        )
    accuracy = {}
    for split, (runner, scores) in splits.items():
        accuracy[split] = {
            "images": int(len(runner.labels)),
            "fp32_top1": runner.fp32_top1,
            **{f"{name}_top1": s.top1 for name, s in scores.items()},
            **{f"{name}_agreement": s.agreement for name, s in scores.items()},
            **{f"{name}_drop_pp": round((runner.fp32_top1 - s.top1) * 100, 4) for name, s in scores.items()},
        }
    return {
        "settings": asdict(settings),
        "budget_met": budget.met(result.scores["fallback"], fp32) if settings.searches else None,
        "excluded": [
            {
                "layer": by_node[node].name,
                "node": node,
                "op_type": by_node[node].op_type,
                "precision": precision,
                "macs": macs.get(node, 0),
            }
            for node, precision in result.fallback.items()
        ],
        "int8_mac_share": int8_mac_share(macs, result.fallback),
        "total_macs": sum(macs.values()),
        "accuracy": accuracy,
        "sensitivity": result.sensitivity,
        "steps": result.steps,
        "evaluations": result.evaluations,
        "search_seconds": result.seconds,
    }
