"""DeepStream nvinfer configs: the documented preprocessing with the file's own numbers gives our logits."""

from __future__ import annotations

import configparser

import numpy as np
import pytest

from resnet_deploy import data
from resnet_deploy.device.deepstream import DeepStreamSettings, config_text, labels_text, write_deepstream_files
from resnet_deploy.quantize.cache import write_calibration_cache
from resnet_deploy.runners.onnxrt import OnnxRuntimeRunner

pytestmark = pytest.mark.runtime

# Every key nvinfer's parser knows in the [property] group (gstnvinfer_property_parser.h, DeepStream 7.0/7.1),
# limited to the ones a classifier config may use: a misspelt key would be ignored by nvinfer with a warning.
NVINFER_KEYS = {
    "gie-unique-id", "process-mode", "interval", "labelfile-path", "gpu-id", "secondary-reinfer-interval",
    "output-tensor-meta", "enable-dla", "use-dla-core", "batch-size", "tensor-meta-pool-size", "network-mode",
    "model-engine-file", "int8-calib-file", "workspace-size", "output-blob-names", "network-type",
    "force-implicit-batch-dim", "infer-dims", "model-color-format", "net-scale-factor", "offsets", "mean-file",
    "maintain-aspect-ratio", "symmetric-padding", "scaling-filter", "scaling-compute-hw", "onnx-file",
    "classifier-type", "classifier-threshold", "classifier-async-mode", "custom-lib-path",
    "parse-classifier-func-name",
}
# The values nvinfer's parser accepts (gstnvinfer_property_parser.cpp: NvBufSurfTransformCompute 0..2,
# NvBufSurfTransform_Inter 0..6).
SCALING_VALUES = {"scaling-compute-hw": {"0", "1", "2"}, "scaling-filter": {str(v) for v in range(7)}}
# deepstream-app's groups and the keys of each we may write (DeepStream Reference Application, "Configuration
# Groups"): a misspelt group or key is ignored or refused.
APP_KEYS = {
    "application": {"enable-perf-measurement", "perf-measurement-interval-sec", "gie-kitti-output-dir"},
    "source0": {"enable", "type", "uri", "num-sources", "gpu-id", "cudadec-memtype", "drop-frame-interval"},
    "streammux": {"gpu-id", "live-source", "batch-size", "batched-push-timeout", "width", "height",
                  "enable-padding", "nvbuf-memory-type"},
    "primary-gie": {"enable", "gpu-id", "batch-size", "gie-unique-id", "config-file", "model-engine-file"},
    "osd": {"enable"},
    "tiled-display": {"enable"},
    "sink0": {"enable", "type", "sync", "source-id", "gpu-id"},
}
PRECISIONS = ("fp32", "fp16", "int8")


@pytest.fixture(scope="module")
def deepstream_folder(tmp_path_factory, trained_onnx):
    """The DeepStream files of the trained tiny model, laid out as in a bundle (configs beside the softmax graph)."""
    root = tmp_path_factory.mktemp("deepstream")
    (root / "deepstream").mkdir()
    (root / "labels.txt").write_text(labels_text(data.CLASS_NAMES))
    write_calibration_cache(root / "model.cache", {"input": 2.0})
    write_deepstream_files(root / "deepstream", "tiny", trained_onnx, "../model.cache", "../labels.txt",
                           data.MEAN, data.STD, (1, 28, 28), DeepStreamSettings(batch_size=4))
    return root / "deepstream"


def read_property_group(path) -> dict[str, str]:
    """The [property] group as nvinfer's GKeyFile reads it: `key=value`, `#` comments."""
    parser = configparser.ConfigParser(delimiters=("=",), comment_prefixes=("#",), interpolation=None)
    parser.optionxform = str
    parser.read_string(path.read_text())
    assert parser.sections() == ["property"]
    return dict(parser["property"])


def deepstream_preprocess(raw: np.ndarray, config: dict[str, str]) -> np.ndarray:
    """nvinfer's documented y = net-scale-factor * (x - offsets[c]), in float32 as nvinfer keeps both numbers."""
    channels, height, width = (int(v) for v in config["infer-dims"].split(";"))
    assert (channels, height, width) == (1, 28, 28) and config["model-color-format"] == "2"
    scale = np.float32(float(config["net-scale-factor"]))
    (offset,) = (np.float32(float(v)) for v in config["offsets"].split(";"))
    return scale * (raw.astype(np.float32)[:, None] - offset)


def test_deepstream_preprocessing_gives_the_logits_of_our_normalization(deepstream_folder, trained_onnx, data_dir):
    raw = data.load_fashion_mnist(data_dir).test_images[:500]
    ours = data.normalize(raw)
    for precision in PRECISIONS:
        config = read_property_group(deepstream_folder / f"config_infer_tiny_{precision}.txt")
        theirs = deepstream_preprocess(raw, config)
        # Same affine map in exact arithmetic; float32 rounding of |y| <= 2.03 leaves a few ulp (2.4e-7 each).
        assert np.abs(theirs - ours).max() <= 8 * np.spacing(np.float32(2.0))
        with OnnxRuntimeRunner(trained_onnx, providers=["CPUExecutionProvider"]) as runner:
            expected, got = runner.infer({"input": ours})["logits"], runner.infer({"input": theirs})["logits"]
        # Input differences of ~1e-6 move the logits of this small net by well under 1e-4.
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)
        assert (got.argmax(1) == expected.argmax(1)).all()
        with OnnxRuntimeRunner(deepstream_folder / config["onnx-file"], providers=["CPUExecutionProvider"]) as runner:
            (name,) = [m.name for m in runner.input_metadata()]
            probabilities = runner.infer({name: theirs})[config["output-blob-names"]]
        softmax = np.exp(expected - expected.max(1, keepdims=True))
        np.testing.assert_allclose(probabilities, softmax / softmax.sum(1, keepdims=True), rtol=0, atol=1e-5)


def test_the_check_would_catch_offsets_in_the_wrong_units(deepstream_folder, data_dir):
    raw = data.load_fashion_mnist(data_dir).test_images[:50]
    config = read_property_group(deepstream_folder / "config_infer_tiny_fp32.txt")
    config["offsets"] = str(data.MEAN)  # mean in [0, 1] units instead of pixel units
    assert np.abs(deepstream_preprocess(raw, config) - data.normalize(raw)).max() > 0.5


@pytest.mark.parametrize("precision, mode", [("fp32", "0"), ("int8", "1"), ("fp16", "2")])
def test_each_config_has_the_documented_keys_and_values(deepstream_folder, precision, mode):
    config = read_property_group(deepstream_folder / f"config_infer_tiny_{precision}.txt")
    assert set(config) <= NVINFER_KEYS
    assert config["network-mode"] == mode
    assert (config["network-type"], config["process-mode"], config["gie-unique-id"]) == ("1", "1", "1")
    assert config["batch-size"] == "4" and config["classifier-threshold"] == "0.5"
    assert config["output-blob-names"] == "probabilities"
    assert config["model-engine-file"] == f"tiny.deepstream.onnx_b4_gpu0_{precision}.engine"
    assert (deepstream_folder / config["onnx-file"]).is_file()
    labels = (deepstream_folder / config["labelfile-path"]).read_text()
    assert labels.splitlines() == [";".join(data.CLASS_NAMES)]
    assert ("int8-calib-file" in config) == (precision == "int8")
    if precision == "int8":
        assert (deepstream_folder / config["int8-calib-file"]).read_text().startswith("TRT-100300-")
    assert config["enable-dla"] == "0" and ("use-dla-core" in config) == (precision != "fp32")


def read_ini(path) -> dict[str, dict[str, str]]:
    parser = configparser.ConfigParser(delimiters=("=",), comment_prefixes=("#",), interpolation=None)
    parser.optionxform = str
    parser.read_string(path.read_text())
    return {name: dict(parser[name]) for name in parser.sections()}


def test_every_generated_config_uses_only_known_keys_and_scales_on_the_gpu(deepstream_folder):
    """Every nvinfer config scales on the GPU with a documented filter (the VIC refuses >16x); every
    deepstream-app config has only known groups and keys, a headless sink and our nvinfer config."""
    configs = sorted(deepstream_folder.glob("config_infer_*.txt"))
    apps = sorted(deepstream_folder.glob("deepstream_app_*.txt"))
    assert len(configs) == len(apps) == len(PRECISIONS)
    for path in configs:
        config = read_property_group(path)
        assert set(config) <= NVINFER_KEYS, path
        for key, allowed in SCALING_VALUES.items():
            assert config[key] in allowed, (path, key)
        assert config["scaling-compute-hw"] == "1" and config["scaling-filter"] not in ("0", "6")
    for path in apps:
        groups = read_ini(path)
        assert set(groups) == set(APP_KEYS), path
        for group, keys in groups.items():
            assert set(keys) <= APP_KEYS[group], (path, group)
        assert groups["sink0"]["type"] == "1" and groups["source0"]["type"] == "3"
        assert groups["primary-gie"]["batch-size"] == groups["streammux"]["batch-size"] == "4"
        gie = deepstream_folder / groups["primary-gie"]["config-file"]
        assert gie.is_file() and gie.name == path.name.replace("deepstream_app_", "config_infer_")


def test_limited_range_video_maps_16_and_235_onto_black_and_white(tmp_path, trained_onnx):
    settings = DeepStreamSettings(video_range="limited")
    text = config_text("m", "fp32", onnx_file="m.onnx", labels_file="l.txt", mean=data.MEAN, std=data.STD,
                       input_shape=(1, 28, 28), settings=settings)
    config = dict(line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#"))
    scale, offset = float(config["net-scale-factor"]), float(config["offsets"])
    for luma, full in ((16, 0), (235, 255), (125.5, 127.5)):
        assert scale * (luma - offset) == pytest.approx((full / 255 - data.MEAN) / data.STD, abs=1e-6)
    with pytest.raises(ValueError, match="video range"):
        DeepStreamSettings(video_range="studio")


def test_labels_and_int8_inputs_are_checked():
    with pytest.raises(ValueError, match="';'"):
        labels_text(["a;b", "c"])
    with pytest.raises(ValueError, match="calibration cache"):
        config_text("m", "int8", onnx_file="m.onnx", labels_file="l.txt", mean=0.5, std=0.5, input_shape=(1, 28, 28))
    with pytest.raises(ValueError, match="precision"):
        config_text("m", "int4", onnx_file="m.onnx", labels_file="l.txt", mean=0.5, std=0.5, input_shape=(1, 28, 28))
