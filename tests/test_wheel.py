"""The project's wheel for the device bundle: written without a build backend, reproducible, torch-free,
and installable by pip (entry point, extras)."""

from __future__ import annotations

import zipfile

import pytest

from resnet_deploy.errors import ArtifactError
from resnet_deploy.device.wheel import build_wheel, check_torch_free, required_dependencies

pytestmark = pytest.mark.runtime


def test_the_wheel_is_reproducible_and_torch_free(tmp_path):
    first, second = build_wheel(tmp_path / "a"), build_wheel(tmp_path / "b")
    assert first.name == second.name and first.read_bytes() == second.read_bytes()
    with zipfile.ZipFile(first) as archive:
        names = archive.namelist()
        metadata = archive.read(next(n for n in names if n.endswith("METADATA"))).decode()
        record = archive.read(next(n for n in names if n.endswith("RECORD"))).decode()
        entry_points = archive.read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "resnet-deploy = resnet_deploy.cli:main" in entry_points
    assert "Provides-Extra: images" in metadata and 'Requires-Dist: torch>=2.2; extra == "torch"' in metadata
    assert "torch" not in required_dependencies(first) and "onnxruntime" in required_dependencies(first)
    assert len(record.splitlines()) == len(names) and not any(n.startswith("tests/") for n in names)


def test_a_wheel_requiring_torch_is_refused(tmp_path):
    wheel = tmp_path / "x-1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("x-1.dist-info/METADATA", "Name: x\nRequires-Dist: torch>=2\nRequires-Dist: numpy\n")
    with pytest.raises(ArtifactError, match="requires torch"):
        check_torch_free(wheel)
