"""DEVICE.md: the commands a Jetson user runs, in order, from the bundle's tarball alone.

Every command sits in a ```sh block. CI (`.ci/rehearsal`) runs the blocks literally, in order, in an
empty home folder holding only the tarball, with a fresh Python 3.10; a line ending in `# device-only`
needs the board (sudo, TensorRT, CUDA, nvpmodel, DeepStream) and is only checked for syntax there, and
the bundle files it reads (`--onnx=`, `--calib=`, `-c`) must exist at that point.
"""

from __future__ import annotations

from typing import Any

from resnet_deploy.trt.settings import EngineSettings
from resnet_deploy.trt.trtexec import trtexec_command

DEVICE_ONLY = "# device-only"
WHEEL_FOLDER = "resnet-deploy-wheel"
SUPPORTED_JETPACK = "JetPack 6.1 and 6.2.x (L4T 36.4.x: TensorRT 10.3, DeepStream 7.1, CUDA 12.6, Python 3.10)"


def _device(line: str) -> str:
    return f"{line}  {DEVICE_ONLY}"


def _block(*lines: str) -> str:
    return "```sh\n" + "\n".join(lines) + "\n```"


def trtexec_lines(manifest: dict[str, Any]) -> list[str]:
    """trtexec builds of the engines `build --bundle` makes by default, run from the bundle folder."""
    stem = manifest["model"]["name"]
    cache = next(r for r, e in manifest["files"].items() if e["role"] == "calibration_cache")
    int8 = EngineSettings(precision="int8")
    legacy = EngineSettings(precision="int8", legacy_calibrator=True)
    fp16 = EngineSettings(precision="fp16")
    shape = manifest["model"]["inputs"][0]["shape"][1:]
    name = manifest["model"]["inputs"][0]["name"]
    return [
        trtexec_command(
            settings,
            manifest["precisions"][source],
            f"../engines/{stem}.{tag}.trtexec.engine",
            input_name=name,
            input_shape=shape,
            calibration_cache=cache,
        )
        for settings, source, tag in (
            (int8, "int8", "int8"),
            (legacy, "fp32", "int8-legacy-calib"),
            (fp16, "fp16", "fp16"),
        )
    ]


def device_readme(name: str, manifest: dict[str, Any], wheel: str, wheel_sha256: str) -> str:
    """DEVICE.md of bundle `name` (its tarball `name.tar.gz`) with `wheel` (relative path) in it."""
    stem, ds = manifest["model"]["name"], manifest["normalization"]
    wheel_name = wheel.rsplit("/", 1)[-1]
    rows = "\n".join(
        f"| {label} | {e['precision']} | {e['top1'] * 100:.2f}% | {e['agreement'] * 100:.2f}% |"
        for label, e in manifest["parity"]["artifacts"].items()
    )
    limited = ds["deepstream"].get("limited_range", {})
    trtexec = "\n".join(_device(line) for line in trtexec_lines(manifest))
    measure = _block(
        _device(f"resnet-deploy infer engines/{stem}.int8-*.engine ~/photos/ --top-k 3"),
        _device('sudo nvpmodel -m "$(python -m resnet_deploy.device.jetson fastest-mode)"'),
        _device("sudo jetson_clocks"),
        _device(f"resnet-deploy bench engines/{stem}.int8-*.engine --batch-sizes 1,8 --cuda-graph"),
    )
    return f"""# {name}: {stem} for a Jetson

Made by resnet-deploy {manifest["versions"]["resnet-deploy"]} on {manifest["created"]}. `manifest.json` lists
every file with its SHA-256; `resnet-deploy verify-bundle` refuses a changed, missing or extra file.
Input `{manifest["model"]["inputs"][0]["name"]}` float32 [N, 1, 28, 28] = (x / 255 - {ds["mean"]}) / {ds["std"]}
of 8-bit gray pixels, a light object on a dark background; output logits over {len(manifest["class_names"])}
classes (`labels.txt`). INT8 calibration: {manifest["calibration"]["method"]} on {manifest["calibration"]["count"]}
train-split images, cache `{manifest["calibration"]["cache_header"]}`.

**Supported: {SUPPORTED_JETPACK}.** JetPack 6.0 (L4T 36.3) ships TensorRT 8.6 and DeepStream 7.0,
which skip this `TRT-100300` calibration cache: step 2's `python -m resnet_deploy.device.jetson check` refuses
TensorRT 8.6 with one line naming it and JetPack 6.1 (exit 3); upgrade the board. JetPack 5 (TensorRT 8.5, Python 3.8) is not supported.
What was checked where: CI runs every line below not marked `{DEVICE_ONLY}` from this tarball alone on
Python 3.10 without TensorRT; TensorRT, DLA, nvpmodel and DeepStream lines are checked on fakes and for
syntax only: **none of it has been run on a Jetson board.**

The `{DEVICE_ONLY}` lines need the board (sudo, TensorRT, CUDA, nvpmodel, DeepStream).

## 1. Copy it to the board (from the workstation)

{_block(_device(f"scp {name}.tar.gz jetson:~"))}

## 2. Install the runtime from the bundle's wheel, without torch

The wheel is the project itself (no torch; `[images]` adds Pillow for photos). pip fetches numpy, onnx,
onnxruntime, click, rich and filelock from its usual index; JetPack brings TensorRT (`python3-libnvinfer`).

{
        _block(
            _device("sudo apt-get update && sudo apt-get install -y python3-venv python3-dev python3-libnvinfer"),
            "cd ~",
            f"mkdir -p ~/{WHEEL_FOLDER}",
            f"tar -xzf ~/{name}.tar.gz -C ~/{WHEEL_FOLDER} --strip-components=2 {name}/{wheel}",
            f'echo "{wheel_sha256}  $HOME/{WHEEL_FOLDER}/{wheel_name}" | sha256sum -c -',
            "python3 -m venv --system-site-packages ~/resnet-deploy-venv",
            ". ~/resnet-deploy-venv/bin/activate",
            f'pip install "$HOME/{WHEEL_FOLDER}/{wheel_name}[images]"',
            _device("PATH=/usr/local/cuda/bin:$PATH pip install pycuda"),
            _device('python -c "import pycuda.driver" && python -m resnet_deploy.device.jetson check'),
            "resnet-deploy --version",
        )
    }

## 3. Check the bundle and build the engine on the board

`verify-bundle` unpacks the tarball to `~/{name}` (an existing folder there is replaced only when it holds
nothing but an older bundle's own files; otherwise it exits 2 naming the others and touches nothing).
Without TensorRT, `build --bundle` checks parity on ONNX Runtime and says the engine step was not run.

{
        _block(
            f"resnet-deploy verify-bundle ~/{name}.tar.gz --parity",
            f"resnet-deploy build --bundle ~/{name} --precision int8",
        )
    }

`--precision fp16` and `fp32` build from the other graphs; `--legacy-calibrator` builds INT8 from the FP32
graph and the calibration cache instead. Engines go to `./engines`, reports to `./reports` (never into
the bundle). The Fashion-MNIST test split comes from `--data-dir` / `$RESNET_DEPLOY_DATA`, or is
downloaded and MD5-checked into `~/.cache/resnet-deploy`.

## 4. The same engines with trtexec (optional)

The `trtexec` lines that build what `build --bundle` builds (strongly typed Q/DQ INT8, the legacy INT8
build from the FP32 graph and the cache, FP16), from the bundle folder:

{_block("mkdir -p ~/engines", f"cd ~/{name}", trtexec, "cd ~")}

## 5. Classify your photos and measure latency

The fastest power mode is read from the board's `/etc/nvpmodel.conf` by name (MAXN_SUPER on JetPack 6.2
"Super" boards, else MAXN, else the highest wattage: Orin Nano has no MAXN before 6.2); its number differs
per board (mode 0 is 15 W on Orin Nano, MAXN_SUPER is mode 2 there).

{measure}

`bench` records the L4T release, power mode, clocks, thermal zones and the EMC clock, and warns when the
clocks are not locked or the board throttles.

## 6. DeepStream {manifest["deepstream_version"]} (optional)

`deepstream/config_infer_{stem}_<fp32|fp16|int8>.txt` configure `nvinfer` as a primary classifier on the
full frame; `deepstream/deepstream_app_{stem}_<precision>.txt` run it in `deepstream-app` on DeepStream's
sample video with a headless sink (edit `[source0] uri` for yours). nvinfer builds its own engine from
`deepstream/{stem}.deepstream.onnx` (the FP32 graph with a Softmax, INT8 through the calibration cache) and
saves it beside it; verification accepts those engine files.

{_block(_device(f"deepstream-app -c ~/{name}/deepstream/deepstream_app_{stem}_int8.txt"))}

- **Scaling**: the configs scale on the GPU (`scaling-compute-hw=1`) with supersampling (`scaling-filter=3`);
  the Jetson's default scaler, the VIC, refuses a downscale above 16x, and 1280x720 to 28x28 is about 46x.
- **Video range**: nvinfer's gray input is the luma plane. These configs assume {
        ds["deepstream"].get("video_range", "full")
    }-range
  pixels (net-scale-factor {ds["deepstream"]["net-scale-factor"]:.9g}, offsets {ds["deepstream"]["offsets"]:.9g}).
  Decoded video is usually limited range (luma 16..235): then use net-scale-factor
  {limited.get("net-scale-factor", 0):.9g} and offsets {
        limited.get("offsets", 0):.9g} (`bundle --deepstream-video-range limited`).
- **Polarity**: the model expects a light object on a dark background. nvinfer cannot invert the picture;
  a dark-on-light scene needs an inverting step before it (Gst-nvdspreprocess with a custom tensor
  preparation), or the answers are wrong.

## Parity on the workstation ({manifest["parity"]["images"]} {manifest["parity"]["split"]} images, reference {
        manifest["parity"]["reference"]["name"]
    } top-1 {manifest["parity"]["reference"]["top1"] * 100:.2f}%)

| artifact | precision | top-1 | agreement |
| --- | --- | --- | --- |
{rows}
"""
