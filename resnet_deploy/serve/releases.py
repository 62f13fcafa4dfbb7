"""Which NGC Triton container release carries which TensorRT, so a plan can be matched to a container.

Source: NVIDIA's "Release Compatibility Matrix", triton-inference-server/server
docs/introduction/compatibility.md, table "Container Name: trtllm-python-py3" (the only per-release
TensorRT table NVIDIA publishes in the Triton repository; read 2026). It lists the TensorRT of the
`YY.MM-trtllm-python-py3` images; the plain `YY.MM-py3` image of the same month may carry another
TensorRT patch or minor release (NVIDIA's Frameworks Support Matrix lists those), so a plan built
outside the container should be checked against `--container-tensorrt` when that version is known.
"""

from __future__ import annotations

SOURCE = "triton-inference-server/server docs/introduction/compatibility.md, 'Container Name: trtllm-python-py3' table"

# NGC release -> TensorRT version, as printed in the source table.
TENSORRT_BY_RELEASE = {
    "24.05": "10.0.1.6",
    "24.06": "10.0.1",
    "24.07": "10.1.0",
    "24.08": "10.3.0",
    "24.09": "10.4.0",
    "24.10": "10.4.0",
    "24.11": "10.6.0",
    "24.12": "10.7.0",
    "25.01": "10.8.0.43",
    "25.02": "10.8.0.43",
    "25.03": "10.9.0.34",
    "25.04": "10.9.0.34",
    "25.05": "10.9.0.34",
    "25.06": "10.10.0.31",
    "25.07": "10.10.0.31",
    "25.08": "10.11.0.33",
    "25.09": "10.11.0.33",
    "25.10": "10.11.0.33",
    "25.11": "10.13.3.9",
    "25.12": "10.13.3.9",
    "26.01": "10.13.3.9",
    "26.02": "10.13.3.9",
    "26.03": "10.14.1.48",
    "26.04": "10.14.1.48",
    "26.05": "10.14.1.48",
    "26.06": "10.14.1.48",
    "26.07": "10.14.1.48",
}


def _release_numbers(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split(".")[:3] if part.isdigit())


def releases_carrying(tensorrt_version: str) -> list[str]:
    """NGC releases whose TensorRT has the same major.minor.patch as `tensorrt_version`."""
    wanted = _release_numbers(tensorrt_version)
    return [release for release, version in TENSORRT_BY_RELEASE.items() if _release_numbers(version) == wanted]


def container_image(release: str) -> str:
    return f"nvcr.io/nvidia/tritonserver:{release}-trtllm-python-py3"
