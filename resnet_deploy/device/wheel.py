"""The project's own wheel for the device bundle: written offline from the source checkout, checked torch-free.

The wheel is written here (PEP 427: the package's `.py` files, `<name>.dist-info/{METADATA, WHEEL,
entry_points.txt, top_level.txt, RECORD}`), with METADATA (core metadata 2.1) made from `pyproject.toml`:
no build backend, no `wheel` package and no registry are needed, so Python 3.10 venvs with their stock
setuptools make the same wheel. Entries carry a fixed timestamp, so the same source gives the same bytes.
The wheel's required dependencies must not name torch: `torch` is the `[torch]` extra only, so
`pip install resnet_deploy-*.whl[images]` on a Jetson pulls numpy, onnx, onnxruntime, click, rich,
filelock, onnxconverter-common and Pillow, never torch.
"""

from __future__ import annotations

import base64
import hashlib
import re
import zipfile
from pathlib import Path
from typing import Any

from resnet_deploy.errors import ArtifactError

PROJECT = "resnet-deploy"
FORBIDDEN = ("torch", "onnxscript", "tensorrt", "pycuda")  # never required by the runtime wheel
_REQUIRES = re.compile(r"^Requires-Dist:\s*([A-Za-z0-9_.\-]+)(.*)$", re.MULTILINE)


def source_root() -> Path:
    """The checkout this package runs from (`pyproject.toml` of resnet-deploy beside the package)."""
    root = Path(__file__).resolve().parents[2]  # resnet_deploy/device/wheel.py -> the checkout
    pyproject = root / "pyproject.toml"
    if not pyproject.is_file() or f'name = "{PROJECT}"' not in pyproject.read_text():
        raise ArtifactError(
            f"{root}: no resnet-deploy pyproject.toml; the bundle's wheel is built from the source "
            "checkout (pip install -e <checkout>)"
        )
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


def _pyproject(root: Path) -> dict[str, Any]:
    try:
        import tomllib
    except ImportError:  # Python 3.10: the TOML reader pip vendors
        from pip._vendor import tomli as tomllib
    return tomllib.loads((root / "pyproject.toml").read_text())["project"]


def core_metadata(project: dict[str, Any]) -> str:
    """METADATA (core metadata 2.1) of `[project]`: name, version, Python, dependencies and extras."""
    lines = [
        "Metadata-Version: 2.1",
        f"Name: {project['name']}",
        f"Version: {project['version']}",
        f"Summary: {project.get('description', '')}",
        f"Requires-Python: {project.get('requires-python', '')}",
    ]
    if isinstance(project.get("license"), dict) and "text" in project["license"]:
        lines.append(f"License: {project['license']['text']}")
    lines += [f"Requires-Dist: {requirement}" for requirement in project.get("dependencies", [])]
    for extra, requirements in project.get("optional-dependencies", {}).items():
        lines.append(f"Provides-Extra: {extra}")
        lines += [f'Requires-Dist: {requirement}; extra == "{extra}"' for requirement in requirements]
    return "\n".join(lines) + "\n"


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def build_wheel(out_dir: Path) -> Path:
    """`out_dir/resnet_deploy-<version>-py3-none-any.whl`, written from the checkout's package and pyproject."""
    from resnet_deploy.fileio import atomic_path

    root = source_root()
    project = _pyproject(root)
    dist = f"{project['name'].replace('-', '_')}-{project['version']}"
    scripts = "".join(f"{name} = {target}\n" for name, target in project.get("scripts", {}).items())
    entries = {
        path.relative_to(root).as_posix(): path.read_bytes()
        for path in sorted((root / "resnet_deploy").rglob("*.py"))
        if "__pycache__" not in path.parts
    }
    entries.update(
        {
            f"{dist}.dist-info/METADATA": core_metadata(project).encode(),
            f"{dist}.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: resnet-deploy\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
            f"{dist}.dist-info/entry_points.txt": f"[console_scripts]\n{scripts}".encode(),
            f"{dist}.dist-info/top_level.txt": b"resnet_deploy\n",
        }
    )
    record = "\n".join([*(_record_line(n, d) for n, d in entries.items()), f"{dist}.dist-info/RECORD,,"]) + "\n"
    entries[f"{dist}.dist-info/RECORD"] = record.encode()
    out_dir.mkdir(parents=True, exist_ok=True)
    wheel = out_dir / f"{dist}-py3-none-any.whl"
    with atomic_path(wheel) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            archive.writestr(info, data, zipfile.ZIP_DEFLATED)
    check_torch_free(wheel)
    return wheel
