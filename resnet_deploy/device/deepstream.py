"""DeepStream `nvinfer` configs for the classifier (one per precision) and DeepStream's label file.

Written for DeepStream 7.1 (JetPack 6.1 / 6.2, TensorRT 10.3). Every key was checked against:
- Gst-nvinfer, "Gst-nvinfer File Configuration Specifications" and the preprocessing formula
  `y = net-scale-factor * (x - mean)`, mean = `offsets[c]`, x the 8-bit pixel:
  https://docs.nvidia.com/metropolis/deepstream/dev-guide/text/DS_plugin_gst-nvinfer.html
- the key names in `gstnvinfer_property_parser.h` (DeepStream 7.0 SDK API reference,
  https://docs.nvidia.com/metropolis/deepstream/7.0/sdk-api/gstnvinfer__property__parser_8h_source.html)
  and the values its parser accepts (`gstnvinfer_property_parser.cpp`, shipped under
  /opt/nvidia/deepstream/deepstream/sources/gst-plugins/gst-nvinfer/): network-mode 0 FP32, 1 INT8,
  2 FP16; network-type 1 classifier; model-color-format 2 GRAY; infer-dims `c;h;w`; lists split on
  `;`; relative paths are resolved against the config file's folder.
- labels (`NvDsInferContextImpl::parseLabelsFile`): one line per output layer, its labels split on `;`.
- the default classifier parser (`parseAttributesFromSoftmaxLayers`) reads each output as softmax
  probabilities and keeps the best class above `classifier-threshold`. Our graph ends in logits, so
  DeepStream gets a copy of the FP32 graph with a Softmax appended (same argmax, probabilities for
  the threshold).
- the engine nvinfer serializes after building is `<onnx-file>_b<batch-size>_<gpu0|dla0|dla1>_<mode>.engine`
  (`nvdsinfer_model_builder.cpp`); `model-engine-file` names it so the next start loads it.

Scaling: nvinfer scales each frame to 28x28 itself. On a Jetson its default scaler is the VIC, which
refuses a scale factor above 16 ("VIC Configuration failed image scale factor exceeds 16",
marcoslucianops/DeepStream-Yolo#553); 1280x720 to 28x28 is about 46x. So the configs set
`scaling-compute-hw=1` (GPU; `NvBufSurfTransformCompute`: 0 platform default, 1 GPU, 2 VIC) and
`scaling-filter=3` (`NvBufSurfTransformInter_Algo2`, "GPU-Super": supersampling, which averages every
source pixel a target pixel covers; the default filter on the GPU is nearest-neighbour, which keeps about
one source pixel in 2,000 at this scale). Values from `nvbufsurftransform.h` and nvinfer's parser, which
accepts 0..6 for scaling-filter.

Video range: nvinfer's GRAY input is the luma plane. Decoded video is usually limited range (Y 16..235,
BT.601/709), images and our dataset full range (0..255). `video_range="limited"` maps 16..235 onto the
trained 0..255: net-scale-factor `1 / (219 std)`, offsets `16 + 219 mean`.

Polarity: nvinfer computes one affine map per channel and cannot invert the picture; Fashion-MNIST is a
light object on a dark background. A dark-on-light scene needs an inverting step upstream (Gst-nvdspreprocess
with a custom tensor-preparation library, or nvinfer's input-tensor-from-meta fed by it).

Normalization: we feed `(x / 255 - mean) / std` = `(x - 255 mean) / (255 std)`, so nvinfer's
`net-scale-factor` is `1 / (255 std)` and `offsets` is `255 mean`, exact in real arithmetic. nvinfer
keeps both as float32 (`NvDsInferContextInitParams`), so they are written with 9 significant digits,
which round-trip any float32; the two float32 evaluations then differ by a few ulp of |y| <= 2.1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from resnet_deploy.fileio import atomic_path, atomic_write_text

DEEPSTREAM_VERSION = "7.1"
DOC_URL = "https://docs.nvidia.com/metropolis/deepstream/dev-guide/text/DS_plugin_gst-nvinfer.html"
NETWORK_MODES = {"fp32": 0, "int8": 1, "fp16": 2}
CLASSIFIER, PRIMARY_MODE, GRAY = 1, 1, 2
PROBABILITIES = "probabilities"
DLA_DEVICES = ("dla0", "dla1")
SCALING_COMPUTE_GPU = 1  # NvBufSurfTransformCompute_GPU
SCALING_FILTER_GPU_SUPER = 3  # NvBufSurfTransformInter_Algo2: GPU-Super (supersampling), VIC-10 tap
VIDEO_RANGES = {"full": (0.0, 255.0), "limited": (16.0, 219.0)}  # (black level, black-to-white span) of luma
SAMPLE_URI = "file:///opt/nvidia/deepstream/deepstream/samples/streams/sample_720p.mp4"  # shipped with DeepStream


@dataclass(frozen=True)
class DeepStreamSettings:
    """What a DeepStream user may want to change; everything else follows from the model."""

    batch_size: int = 1
    classifier_threshold: float = 0.5
    gpu_id: int = 0
    video_range: str = "full"

    def __post_init__(self) -> None:
        if self.video_range not in VIDEO_RANGES:
            raise ValueError(f"video range must be one of {tuple(VIDEO_RANGES)}, got {self.video_range!r}")


def preprocessing(mean: float, std: float, video_range: str = "full") -> tuple[float, float]:
    """(net-scale-factor, offset) with net-scale-factor * (x - offset) == (x' / 255 - mean) / std, x' the
    full-range pixel that luma x of `video_range` stands for."""
    black, span = VIDEO_RANGES[video_range]
    return 1.0 / (span * std), black + span * mean


def labels_text(class_names: Sequence[str]) -> str:
    """DeepStream's classifier label file: one output layer, so one line of `;`-separated labels."""
    bad = [name for name in class_names if ";" in name or "\n" in name]
    if bad:
        raise ValueError(f"class names may not contain ';' or a newline: {bad}")
    return ";".join(class_names) + "\n"


def engine_file_name(onnx_file: str, precision: str, batch_size: int, device: str = "gpu0") -> str:
    """The engine nvinfer writes after building from `onnx_file` (see the module docstring)."""
    return f"{onnx_file}_b{batch_size}_{device}_{precision}.engine"


def device_engine_names(onnx_file: str, precision: str, settings: DeepStreamSettings) -> list[str]:
    """Every engine name nvinfer may write for this config: the GPU one and, for FP16/INT8, each DLA core."""
    devices = [f"gpu{settings.gpu_id}", *(DLA_DEVICES if precision != "fp32" else ())]
    return [engine_file_name(onnx_file, precision, settings.batch_size, d) for d in devices]


def config_text(
    model_name: str,
    precision: str,
    *,
    onnx_file: str,
    labels_file: str,
    mean: float,
    std: float,
    input_shape: Sequence[int],
    calibration_cache: str | None = None,
    settings: DeepStreamSettings = DeepStreamSettings(),
) -> str:
    """The `[property]` group of a primary full-frame classifier at `precision` (paths relative to the config)."""
    if precision not in NETWORK_MODES:
        raise ValueError(f"precision must be one of {tuple(NETWORK_MODES)}, got {precision!r}")
    if precision == "int8" and not calibration_cache:
        raise ValueError("INT8 needs the TensorRT calibration cache (int8-calib-file)")
    scale, offset = preprocessing(mean, std, settings.video_range)
    channels, height, width = input_shape
    lines = [
        f"# DeepStream {DEEPSTREAM_VERSION} Gst-nvinfer config for {model_name}, {precision.upper()}, "
        "written by resnet-deploy.",
        f"# Keys: {DOC_URL} (File Configuration Specifications; checked for DeepStream {DEEPSTREAM_VERSION},",
        "# JetPack 6.1/6.2, TensorRT 10.3). Paths are relative to this file.",
        "# Preprocessing: nvinfer computes y = net-scale-factor * (x - offsets), x the 8-bit gray pixel;",
        f"# resnet-deploy trained on (x / 255 - {mean}) / {std}, so net-scale-factor = 1 / (255 * {std}) and",
        f"# offsets = 255 * {mean} for full-range luma (0..255); limited range (16..235) uses 1 / (219 * {std})",
        f"# and 16 + 219 * {mean}. This file: {settings.video_range} range. Light object on a dark background,",
        "# like Fashion-MNIST; nvinfer cannot invert (dark-on-light scenes need Gst-nvdspreprocess).",
        "[property]",
        f"gpu-id={settings.gpu_id}",
        "gie-unique-id=1",
        "# 1: primary, the classifier runs on the full frame",
        f"process-mode={PRIMARY_MODE}",
        "# 1: classifier",
        f"network-type={CLASSIFIER}",
        f"onnx-file={onnx_file}",
        f"model-engine-file={engine_file_name(Path(onnx_file).name, precision, settings.batch_size, f'gpu{settings.gpu_id}')}",
        f"labelfile-path={labels_file}",
        f"batch-size={settings.batch_size}",
        "# 0: FP32, 1: INT8, 2: FP16",
        f"network-mode={NETWORK_MODES[precision]}",
    ]
    if precision == "int8":
        lines += [
            "# TensorRT 10.3 calibration cache, scales named after the FP32 graph's tensors",
            f"int8-calib-file={calibration_cache}",
        ]
    lines += [
        f"infer-dims={channels};{height};{width}",
        "# 2: GRAY (one channel)",
        f"model-color-format={GRAY}",
        f"net-scale-factor={scale:.9g}",
        f"offsets={offset:.9g}",
        "# keep the aspect ratio and pad evenly with black, as the dataset's images were made",
        "maintain-aspect-ratio=1",
        "symmetric-padding=1",
        "# 1: scale on the GPU (the Jetson default, the VIC, refuses a downscale above 16x; 1280x720 -> 28x28 is 46x)",
        f"scaling-compute-hw={SCALING_COMPUTE_GPU}",
        "# 3: GPU-Super (supersampling: every source pixel counts; the GPU default is nearest-neighbour)",
        f"scaling-filter={SCALING_FILTER_GPU_SUPER}",
        f"output-blob-names={PROBABILITIES}",
        "# softmax probability the best class must reach to be attached to the frame",
        f"classifier-threshold={settings.classifier_threshold!r}",
        "interval=0",
    ]
    if precision == "fp32":
        lines += ["# DLA runs FP16 and INT8 only", "enable-dla=0"]
    else:
        lines += [
            "# 1: run on the DLA core use-dla-core (AGX Orin and Orin NX have DLA cores 0 and 1)",
            "enable-dla=0",
            "use-dla-core=0",
        ]
    return "\n".join(lines) + "\n"


def app_config_text(
    model_name: str,
    precision: str,
    config_file: str,
    settings: DeepStreamSettings = DeepStreamSettings(),
    uri: str = SAMPLE_URI,
    width: int = 1280,
    height: int = 720,
) -> str:
    """A `deepstream-app -c` config: one file source, nvstreammux, our nvinfer config as [primary-gie], and a
    headless fakesink (type=1), so it runs on a board without a display; paths relative to this file."""
    groups: dict[str, dict[str, object]] = {
        "application": {"enable-perf-measurement": 1, "perf-measurement-interval-sec": 5},
        "source0": {"enable": 1, "type": 3, "uri": uri, "num-sources": 1, "gpu-id": settings.gpu_id},
        "streammux": {
            "gpu-id": settings.gpu_id,
            "live-source": 0,
            "batch-size": settings.batch_size,
            "batched-push-timeout": 40000,
            "width": width,
            "height": height,
        },
        "primary-gie": {
            "enable": 1,
            "gpu-id": settings.gpu_id,
            "batch-size": settings.batch_size,
            "gie-unique-id": 1,
            "config-file": config_file,
        },
        "osd": {"enable": 0},
        "tiled-display": {"enable": 0},
        "sink0": {"enable": 1, "type": 1, "sync": 0},
    }
    lines = [
        f"# deepstream-app config for {model_name}, {precision.upper()}, written by resnet-deploy:",
        f"# deepstream-app -c <this file>. Source type 3 = URI ({uri}); sink type 1 = fakesink (headless).",
        "# Replace [source0] uri with your video; paths are relative to this file.",
    ]
    for group, keys in groups.items():
        lines += ["", f"[{group}]", *(f"{key}={value}" for key, value in keys.items())]
    return "\n".join(lines) + "\n"


def softmax_onnx(fp32_onnx: str | Path, out_path: str | Path) -> Path:
    """The FP32 graph with a Softmax over the class axis, output `probabilities` (for nvinfer's classifier parser)."""
    import onnx
    from onnx import helper

    from resnet_deploy.onnx_io import load_onnx

    model = load_onnx(fp32_onnx)
    (logits,) = model.graph.output
    probabilities = onnx.ValueInfoProto()
    probabilities.CopyFrom(logits)
    probabilities.name = PROBABILITIES
    model.graph.node.append(helper.make_node("Softmax", [logits.name], [PROBABILITIES], axis=1, name="softmax"))
    del model.graph.output[:]
    model.graph.output.append(probabilities)
    onnx.checker.check_model(model)
    with atomic_path(out_path) as tmp:
        onnx.save(model, str(tmp))
    return Path(out_path)


def write_deepstream_files(
    folder: Path,
    model_name: str,
    fp32_onnx: Path,
    calibration_cache: str,
    labels_file: str,
    mean: float,
    std: float,
    input_shape: Sequence[int],
    settings: DeepStreamSettings = DeepStreamSettings(),
) -> dict[str, Path]:
    """The softmax graph and one config per precision in `folder`; `calibration_cache` and `labels_file`
    are paths relative to `folder`. Returns the written files by role."""
    onnx_path = softmax_onnx(fp32_onnx, folder / f"{model_name}.deepstream.onnx")
    written = {"deepstream_onnx": onnx_path}
    for precision in NETWORK_MODES:
        text = config_text(
            model_name,
            precision,
            onnx_file=onnx_path.name,
            labels_file=labels_file,
            mean=mean,
            std=std,
            input_shape=input_shape,
            settings=settings,
            calibration_cache=calibration_cache if precision == "int8" else None,
        )
        config = atomic_write_text(folder / f"config_infer_{model_name}_{precision}.txt", text)
        written[f"deepstream_config_{precision}"] = config
        written[f"deepstream_app_{precision}"] = atomic_write_text(
            folder / f"deepstream_app_{model_name}_{precision}.txt",
            app_config_text(model_name, precision, config.name, settings),
        )
    return written
