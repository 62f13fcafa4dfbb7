"""Pinned values for resnet_deploy.parity, written to kill the mutants tools/mutation.sh found surviving:
each gate's metric and direction, the report's exact fields, batching, the baseline gate and the CLI path.
Runners are stand-ins that return chosen logits for real Fashion-MNIST test labels (no model: milliseconds)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from resnet_deploy import data, parity
from resnet_deploy.errors import ArtifactError, GateFailed, ResnetDeployError
from resnet_deploy.runners.base import BaseRunner, TensorMeta

COUNT = 200


class LogitsRunner(BaseRunner):
    """Returns row `i` of `logits` for an image whose pixels all equal `i`; records each batch's size."""

    backend = "stub"

    def __init__(self, logits: np.ndarray, name: str = "stub", max_batch: int = 0):
        super().__init__(name)
        self.logits, self.batches = logits, []
        if max_batch:
            self.max_batch = max_batch

    def _activate(self) -> None: ...

    def _deactivate(self) -> None: ...

    def _input_metadata(self) -> list[TensorMeta]:
        return [TensorMeta("pixels", np.dtype(np.float32), (-1, 1, 1, 1))]

    def _infer(self, feed):
        rows = feed["pixels"].reshape(len(feed["pixels"]), -1)[:, 0].astype(int)
        self.batches.append(len(rows))
        return {"logits": self.logits[rows].astype(np.float64)}


@pytest.fixture(scope="module")
def test_labels(data_dir) -> np.ndarray:
    """The real test-split labels (the label file only: the images are stood in for by row indices)."""
    return data.read_idx(data.idx_path(data_dir, "t10k-labels-idx1-ubyte"), 1).astype(np.int64)


@pytest.fixture(scope="module")
def labels(test_labels) -> np.ndarray:
    return test_labels[:COUNT]


def index_images(n: int) -> np.ndarray:
    return np.arange(n, dtype=np.float32).reshape(n, 1, 1, 1)


def one_hot(predictions: np.ndarray) -> np.ndarray:
    logits = np.zeros((len(predictions), 10), np.float32)
    logits[np.arange(len(predictions)), predictions] = 1.0
    return logits


def wrong(labels: np.ndarray, count: int) -> np.ndarray:
    """`labels` with the first `count` predictions moved to the next class."""
    predictions = labels.copy()
    predictions[:count] = (predictions[:count] + 1) % 10
    return predictions


def test_collect_logits_batches_at_most_the_runners_max_batch():
    logits = np.arange(70, dtype=np.float32).reshape(7, 10)
    runner = LogitsRunner(logits, max_batch=3)
    with runner:
        out = parity.collect_logits(runner, index_images(7), batch_size=5)
    assert runner.batches == [3, 3, 1]
    assert out.dtype == np.float32 and np.array_equal(out, logits)
    plain = LogitsRunner(logits)
    with plain:
        parity.collect_logits(plain, index_images(7), batch_size=4)
    assert plain.batches == [4, 3]
    default = LogitsRunner(np.zeros((300, 10), np.float32))
    with default:
        parity.collect_logits(default, index_images(300))
    assert default.batches == [256, 44]


def test_gate_for_each_precision():
    assert parity.gate_for("fp32", 3.0) == ("agreement", 0.9999)
    assert parity.gate_for("fp16", 3.0) == ("top1_drop_pp", 0.05)
    assert parity.gate_for("int8", 3.0) == ("top1_drop_pp", 3.0)
    assert (parity.FP32_MIN_AGREEMENT, parity.FP16_MAX_DROP_PP, parity.INT8_MAX_DROP_PP) == (0.9999, 0.05, 0.5)


def test_compare_pins_every_field(labels):
    reference = one_hot(labels) * 2.0
    candidate_pred = wrong(labels, 10)
    candidate = one_hot(candidate_pred) * 2.0
    candidate[0, 0] += 0.5
    result = parity.compare(reference, candidate, labels, data.CLASS_NAMES)
    assert result["top1"] == (COUNT - 10) / COUNT
    assert result["top1_drop_pp"] == 5.0
    assert result["agreement"] == (COUNT - 10) / COUNT
    diff = np.abs(reference - candidate)
    assert result["logit_abs_diff"] == {"max": float(diff.max()), "mean": float(diff.mean()),
                                        "p99": float(np.percentile(diff, 99))}
    expected = {}
    for index, name in enumerate(data.CLASS_NAMES):
        mask = labels == index
        expected[name] = round(float((candidate_pred[mask] == index).mean() * 100 - 100), 3)
    assert result["per_class_delta_pp"] == pytest.approx(expected)
    assert set(result) == {"top1", "top1_drop_pp", "agreement", "logit_abs_diff", "per_class_delta_pp"}


def run(labels, candidates: dict[str, np.ndarray], precisions, max_drop_pp=0.5):
    reference = LogitsRunner(one_hot(labels), name="ref")
    runners = {label: LogitsRunner(one_hot(pred), name=label) for label, pred in candidates.items()}
    return parity.run_parity(reference, runners, index_images(COUNT), labels, precisions=precisions,
                             max_drop_pp=max_drop_pp, batch_size=64)


def test_report_fields_and_gates_just_inside_and_outside(labels):
    # one wrong prediction in 200 = 0.5 pp drop, agreement 0.995
    report = run(labels, {"a.onnx": wrong(labels, 1), "b.onnx": labels, "c.onnx": wrong(labels, 1)},
                 {"a.onnx": "int8", "b.onnx": "fp16", "c.onnx": "int8"}, max_drop_pp=0.5)
    assert report["dataset"] == {"split": "test", "count": COUNT}
    assert report["thresholds"] == {"fp32_min_agreement": 0.9999, "fp16_max_drop_pp": 0.05, "int8_max_drop_pp": 0.5}
    assert report["reference"]["name"] == "ref" and report["reference"]["backend"] == "stub"
    assert report["reference"]["top1"] == 1.0 and report["reference"]["seconds"] >= 0
    gates = [(a["label"], a["precision"], a["backend"], g["name"], g["value"], g["threshold"], g["passed"])
             for a in report["artifacts"] for g in a["gates"]]
    assert gates == [("a.onnx", "int8", "stub", "int8 top1_drop_pp", 0.5, 0.5, True),
                     ("b.onnx", "fp16", "stub", "fp16 top1_drop_pp", 0.0, 0.05, True),
                     ("c.onnx", "int8", "stub", "int8 top1_drop_pp", 0.5, 0.5, True)]
    assert report["passed"] is True
    assert all(a["seconds"] >= 0 and a["top1"] == pytest.approx(0.995 if a["label"] != "b.onnx" else 1.0)
               for a in report["artifacts"])
    below = run(labels, {"a.onnx": wrong(labels, 1)}, {"a.onnx": "int8"}, max_drop_pp=0.49)
    assert below["passed"] is False and below["artifacts"][0]["gates"][0]["passed"] is False


def test_one_failing_artifact_fails_the_report(labels):
    report = run(labels, {"good": labels, "bad": wrong(labels, 2), "good2": labels},
                 {"good": "fp32", "bad": "fp16", "good2": "fp32"})
    assert [g["passed"] for a in report["artifacts"] for g in a["gates"]] == [True, False, True]
    assert report["passed"] is False


def test_fp32_agreement_gate_and_unknown_label_held_to_it(labels):
    report = run(labels, {"same": labels, "off": wrong(labels, 1)}, {"same": "fp32"})
    same, off = report["artifacts"]
    assert same["gates"] == [{"name": "fp32 agreement", "value": 1.0, "threshold": 0.9999, "passed": True}]
    assert off["precision"] == "fp32" and off["gates"][0]["value"] == 0.995 and off["gates"][0]["passed"] is False
    assert parity.run_parity(LogitsRunner(one_hot(labels)), {"x": LogitsRunner(one_hot(labels))},
                             index_images(COUNT), labels)["artifacts"][0]["precision"] == "fp32"


def test_fp16_gate_is_not_the_int8_threshold(labels):
    report = run(labels, {"h": wrong(labels, 1)}, {"h": "fp16"}, max_drop_pp=5.0)
    assert report["artifacts"][0]["gates"][0]["threshold"] == 0.05 and report["passed"] is False


def test_apply_baseline_limits_and_report(labels):
    report = run(labels, {"a": wrong(labels, 1), "b": labels, "new": labels},
                 {"a": "int8", "b": "int8", "new": "int8"})
    parity.apply_baseline(report, {"a": 1.0, "b": 1.001}, 0.51, "base.json")
    assert report["baseline"] == "base.json" and report["thresholds"]["max_baseline_drop_pp"] == 0.51
    a, b, new = report["artifacts"]
    assert a["gates"][1] == {"name": "baseline top1_drop_pp", "value": 0.5, "threshold": 0.51, "passed": True}
    assert b["gates"][1]["value"] == 0.1 and b["gates"][1]["passed"] is True
    assert len(new["gates"]) == 1 and report["passed"] is True
    parity.apply_baseline(report, {"a": 1.0}, 0.49)
    assert report["baseline"] == "baseline"
    assert report["artifacts"][0]["gates"][-1]["passed"] is False and report["passed"] is False


def test_baseline_round_trip_and_refusal(tmp_path, labels):
    report = run(labels, {"a": wrong(labels, 3)}, {"a": "int8"})
    path = tmp_path / "base.json"
    parity.write_baseline(report, path)
    assert json.loads(path.read_text()) == {"top1": {"a": 0.985}, "reference_top1": 1.0, "count": COUNT}
    assert parity.read_baseline(path) == {"a": 0.985}
    path.write_text('{"top1": {"a": "x"}}')
    with pytest.raises(ArtifactError, match="base.json"):
        parity.read_baseline(path)


def test_check_reference_rules():
    parity.check_reference("r.onnx", "fp32", {"a": "int8"})
    parity.check_reference("r.onnx", "int8", {"a": "int8", "b": "int8"})
    with pytest.raises(ArtifactError, match=r"^r.onnx: is an fp16 graph; the parity reference must be the FP32"):
        parity.check_reference("r.onnx", "fp16", {"a": "fp16", "b": "int8"})
    with pytest.raises(ArtifactError):
        parity.check_reference("r.onnx", "int8", {})


def test_precision_of_artifact_by_file(tmp_path):
    from tests.classifier_graphs import write_classifier
    from resnet_deploy.trt.sidecar import write_sidecar

    assert parity.precision_of_artifact(tmp_path / "m.pt") == "fp32"
    assert parity.precision_of_artifact(write_classifier(tmp_path / "m.onnx")) == "fp32"
    assert parity.precision_of_artifact(write_classifier(tmp_path / "q.onnx", zero_point=np.int8(0))) == "int8"
    for suffix in (".engine", ".plan"):
        engine = tmp_path / f"e{suffix}"
        write_sidecar(engine, {"precision": "fp16"})
        with pytest.raises(ArtifactError, match="sidecar lacks"):
            parity.precision_of_artifact(engine)
    from resnet_deploy.trt import sidecar

    full = {k: "x" for k in sidecar.REQUIRED_FIELDS}
    write_sidecar(tmp_path / "p.plan", {**full, "precision": "fp16"})
    assert parity.precision_of_artifact(tmp_path / "p.plan") == "fp16"
    write_sidecar(tmp_path / "x.engine", {**full, "precision": "bf16"})
    with pytest.raises(ArtifactError, match=r"/x\.json: precision 'bf16' is not one of fp32, fp16, int8$"):
        parity.precision_of_artifact(tmp_path / "x.engine")


@pytest.fixture
def stub_files(monkeypatch, tmp_path, test_labels, data_dir):
    """parity_for_artifacts over stand-in runners on all 10,000 real test labels: file name -> predictions;
    .onnx files are int8, .fp16 files fp16, others fp32. Returns {name: (backend, threads, runner)}."""
    predictions = {"ref.pt": test_labels, "ok.onnx": test_labels, "bad.onnx": wrong(test_labels, 4),
                   "worse.onnx": wrong(test_labels, 6), "ref.onnx": test_labels, "h.fp16": test_labels}
    made = {}

    def load_fashion_mnist(where):
        assert where == data_dir
        return SimpleNamespace(test_images=np.zeros((len(test_labels), 1), np.uint8), test_labels=test_labels)

    def load_runner(path, backend="auto", threads=0):
        runner = LogitsRunner(one_hot(predictions[Path(path).name]), name=Path(path).name)
        made[Path(path).name] = (backend, threads, runner)
        return runner

    precision = {".onnx": "int8", ".fp16": "fp16"}
    monkeypatch.setattr(parity, "load_runner", load_runner)
    monkeypatch.setattr(parity, "precision_of_artifact", lambda p: precision.get(Path(p).suffix, "fp32"))
    monkeypatch.setattr(parity.data, "normalize", lambda images: index_images(len(images)))
    monkeypatch.setattr(parity.data, "load_fashion_mnist", load_fashion_mnist)
    return made


def test_parity_for_artifacts_writes_report_and_raises_on_failure(tmp_path, stub_files, data_dir):
    out = tmp_path / "report.json"
    report = parity.parity_for_artifacts("ref.pt", ["ok.onnx"], out, limit=COUNT, data_dir=data_dir,
                                         backend="onnxruntime", threads=2, max_drop_pp=1.0, batch_size=50)
    assert {k: v[:2] for k, v in stub_files.items()} == {"ref.pt": ("auto", 2), "ok.onnx": ("onnxruntime", 2)}
    assert report["passed"] is True and report["dataset"]["count"] == COUNT
    assert report["thresholds"]["int8_max_drop_pp"] == 1.0
    assert json.loads(out.read_text())["passed"] is True
    with pytest.raises(GateFailed) as failed:
        parity.parity_for_artifacts("ref.pt", ["ok.onnx", "bad.onnx"], out, limit=COUNT, data_dir=data_dir,
                                    max_drop_pp=1.99)
    assert str(failed.value) == (f"parity gate failed: bad.onnx: int8 top1_drop_pp = 2 (limit 1.99) "
                                 f"(report {out})")
    assert failed.value.details["passed"] is False
    assert json.loads(out.read_text())["passed"] is False
    assert parity.parity_for_artifacts("ref.pt", ["bad.onnx"], out, limit=COUNT, data_dir=data_dir,
                                       max_drop_pp=2.0)["passed"] is True


def test_parity_for_artifacts_baseline(tmp_path, stub_files, data_dir):
    out, base = tmp_path / "report.json", tmp_path / "base.json"
    parity.parity_for_artifacts("ref.pt", ["ok.onnx"], out, limit=COUNT, data_dir=data_dir, baseline=base,
                                update_baseline=True)
    assert json.loads(base.read_text())["top1"] == {"ok.onnx": 1.0}
    assert json.loads(out.read_text()).get("baseline") is None
    base.write_text(json.dumps({"top1": {"bad.onnx": 1.0}}))
    with pytest.raises(GateFailed, match="baseline top1_drop_pp = 2 .limit 0.1."):
        parity.parity_for_artifacts("ref.pt", ["bad.onnx"], out, limit=COUNT, data_dir=data_dir, baseline=base,
                                    max_drop_pp=5)
    report = parity.parity_for_artifacts("ref.pt", ["bad.onnx"], out, limit=COUNT, data_dir=data_dir,
                                         baseline=base, max_drop_pp=5, max_baseline_drop_pp=2.01)
    assert report["baseline"] == str(base) and report["artifacts"][0]["gates"][1]["passed"] is True


def test_parity_for_artifacts_defaults(tmp_path, stub_files, data_dir):
    report = parity.parity_for_artifacts("ref.pt", ["ok.onnx"], tmp_path / "r.json", data_dir=data_dir)
    assert {k: v[:2] for k, v in stub_files.items()} == {"ref.pt": ("auto", 0), "ok.onnx": ("auto", 0)}
    assert report["dataset"]["count"] == 10000
    assert stub_files["ref.pt"][2].batches == stub_files["ok.onnx"][2].batches == [256] * 39 + [16]
    parity.parity_for_artifacts("ref.pt", ["ok.onnx"], tmp_path / "r.json", data_dir=data_dir, limit=COUNT,
                                batch_size=64)
    assert stub_files["ref.pt"][2].batches == stub_files["ok.onnx"][2].batches == [64, 64, 64, 8]


def test_both_failures_are_named(tmp_path, stub_files, data_dir):
    out = tmp_path / "r.json"
    with pytest.raises(GateFailed) as failed:
        parity.parity_for_artifacts("ref.pt", ["bad.onnx", "worse.onnx"], out, limit=COUNT, data_dir=data_dir,
                                    max_drop_pp=1.0)
    assert str(failed.value) == ("parity gate failed: bad.onnx: int8 top1_drop_pp = 2 (limit 1); "
                                 f"worse.onnx: int8 top1_drop_pp = 3 (limit 1) (report {out})")


def test_reference_precision_is_checked(tmp_path, stub_files, data_dir):
    report = parity.parity_for_artifacts("ref.onnx", ["ok.onnx"], tmp_path / "r.json", data_dir=data_dir,
                                         limit=COUNT)
    assert report["passed"] is True
    with pytest.raises(ArtifactError, match=r"^ref\.onnx: is an int8 graph"):
        parity.parity_for_artifacts("ref.onnx", ["h.fp16"], tmp_path / "r.json", data_dir=data_dir, limit=COUNT)


def test_outputs_are_checked_before_inference(tmp_path, stub_files, data_dir):
    with pytest.raises(ResnetDeployError):
        parity.parity_for_artifacts("ref.pt", ["ok.onnx"], tmp_path, data_dir=data_dir, limit=COUNT)
    assert stub_files["ref.pt"][2].batches == []
    (tmp_path / "folder").mkdir()
    with pytest.raises(ResnetDeployError):
        parity.parity_for_artifacts("ref.pt", ["ok.onnx"], tmp_path / "r.json", data_dir=data_dir, limit=COUNT,
                                    baseline=tmp_path / "folder", update_baseline=True)
    assert stub_files["ref.pt"][2].batches == [] and not (tmp_path / "r.json").exists()
    report = parity.parity_for_artifacts("ref.pt", ["ok.onnx"], tmp_path / "r.json", data_dir=data_dir,
                                         limit=COUNT, update_baseline=True)
    assert report["passed"] is True and "baseline" not in report


def test_missing_or_malformed_baseline_is_named(tmp_path):
    with pytest.raises(ArtifactError) as error:
        parity.read_baseline(tmp_path / "b.json")
    assert str(error.value) == f"{tmp_path / 'b.json'}: parity baseline not found"
    (tmp_path / "b.json").write_text('{"top1": 3}')
    with pytest.raises(ArtifactError) as error:
        parity.read_baseline(tmp_path / "b.json")
    assert str(error.value) == f"{tmp_path / 'b.json'}: not a valid parity baseline: top1: expected an object, found 3"


def test_fp32_agreement_at_exactly_the_limit_passes(test_labels):
    reference = LogitsRunner(one_hot(test_labels))
    report = parity.run_parity(reference, {"x": LogitsRunner(one_hot(wrong(test_labels, 1)))},
                               index_images(len(test_labels)), test_labels)
    assert report["artifacts"][0]["agreement"] == 0.9999 and report["passed"] is True
    assert reference.batches == [256] * 39 + [16]


def test_drops_are_rounded_to_4_decimals_and_an_equal_baseline_passes(labels):
    three = labels[:3]
    result = parity.compare(one_hot(three), one_hot(wrong(three, 1)), three, data.CLASS_NAMES)
    assert result["top1_drop_pp"] == 33.3333
    report = run(labels, {"a": labels}, {"a": "int8"})
    parity.apply_baseline(report, {"a": 1.0}, 0.0)
    assert report["artifacts"][0]["gates"][1]["passed"] is True
    parity.apply_baseline(report, {"a": 1.0 + 1 / 3 / 100}, 1.0)
    assert report["artifacts"][0]["gates"][-1]["value"] == 0.3333


class SlowRunner(LogitsRunner):
    def _infer(self, feed):
        time.sleep(0.012)
        return super()._infer(feed)


def test_seconds_are_measured_and_rounded_to_milliseconds(labels):
    report = parity.run_parity(SlowRunner(one_hot(labels)), {"x": SlowRunner(one_hot(labels))},
                               index_images(COUNT), labels, batch_size=COUNT)
    for seconds in (report["reference"]["seconds"], report["artifacts"][0]["seconds"]):
        assert isinstance(seconds, float) and 0.012 <= seconds < 5 and seconds == round(seconds, 3)
