"""The project's own wheel for the device bundle: built offline from the source checkout, checked torch-free.

`pip wheel --no-deps --no-build-isolation --no-index` on a clean copy of `pyproject.toml`, `README.md`
and the `resnet_deploy` package (so the build never writes into the checkout and never reaches a
registry). The wheel's required dependencies must not name torch: `torch` is the `[torch]` extra only,
so `pip install resnet_deploy-*.whl[images]` on a Jetson pulls numpy, onnx, onnxruntime, click, rich,
filelock, onnxconverter-common and Pillow, never torch.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from resnet_deploy.errors import ArtifactError, EnvironmentFailure

PROJECT = "resnet-deploy"
FORBIDDEN = ("torch", "onnxscript", "tensorrt", "pycuda")  # never required by the runtime wheel
_REQUIRES = re.compile(r"^Requires-Dist:\s*([A-Za-z0-9_.\-]+)(.*)$", re.MULTILINE)


def source_root() -> Path:
    """The checkout this package runs from (`pyproject.toml` of resnet-deploy beside the package)."""
    root = Path(__file__).resolve().parent.parent
    pyproject = root / "pyproject.toml"
    if not pyproject.is_file() or f'name = "{PROJECT}"' not in pyproject.read_text():
        raise ArtifactError(f"{root}: no resnet-deploy pyproject.toml; the bundle's wheel is built from the source "
                            "checkout (pip install -e <checkout>)")
    return root


def required_dependencies(wheel: Path) -> list[str]:
    """Names of the wheel's Requires-Dist entries that no extra guards."""
    with zipfile.ZipFile(wheel) as archive:
        metadata = next((n for n in archive.namelist() if n.endswith(".dist-info/METADATA")), None)
        if metadata is None:
            raise ArtifactError(f"{wheel}: no .dist-info/METADATA")
        text = archive.read(metadata).decode()
    return [name.lower() for name, rest in _REQUIRES.findall(text) if "extra ==" not in rest]


def check_torch_free(wheel: Path) -> None:
    bad = sorted(set(required_dependencies(wheel)) & set(FORBIDDEN))
    if bad:
        raise ArtifactError(f"{wheel}: requires {', '.join(bad)} outside an extra; the device wheel must not")


def build_wheel(out_dir: Path) -> Path:
    """`out_dir/resnet_deploy-<version>-py3-none-any.whl`, built offline from a copy of the checkout."""
    root = source_root()
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="resnet-deploy-wheel-") as tmp:
        source = Path(tmp) / "source"
        shutil.copytree(root / "resnet_deploy", source / "resnet_deploy",
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        for name in ("pyproject.toml", "README.md"):
            shutil.copyfile(root / name, source / name)
        built = Path(tmp) / "wheel"
        result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                                 "--no-index", "--wheel-dir", str(built), str(source)],
                                capture_output=True, text=True, cwd=tmp)
        wheels = sorted(built.glob("resnet_deploy-*.whl"))
        if result.returncode != 0 or len(wheels) != 1:
            reason = (result.stderr.strip().splitlines() or ["no wheel written"])[-1]
            raise EnvironmentFailure(f"{root}: pip wheel failed: {reason}")
        check_torch_free(wheels[0])
        return Path(shutil.copyfile(wheels[0], out_dir / wheels[0].name))
