"""ONNX graphs the tests export with torch, served from a folder where torch is absent.

The Jetson runtime job (`.ci/runtime310`: Python 3.10, no torch) runs the runtime tests on the very
graphs the exporter writes, as a device receives them from a workstation: the interpreter that has
torch writes them once (`python -m tests.exported DIR [--trained CHECKPOINT]`) and the 3.10 run
reads DIR from $RESNET_DEPLOY_TEST_ONNX_DIR. Where neither torch nor that folder is there, the
tests that need a graph skip and say why.
"""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

import pytest

ENV = "RESNET_DEPLOY_TEST_ONNX_DIR"
UNTRAINED = {"resnet18-w0.125": 0.125, "resnet18-w0.0625": 0.0625}
TRAINED = "trained"


def _has_torch() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def _from_folder(key: str, path: Path) -> Path:
    folder = os.environ.get(ENV)
    source = Path(folder) / f"{key}.onnx" if folder else None
    if source is None or not source.is_file():
        pytest.skip(f"needs torch to export the {key} graph, or {ENV} with {key}.onnx (.ci/runtime310 sets it)")
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, path)
    return path


def untrained_onnx(key: str, path: Path) -> Path:
    """The untrained resnet18 of width `UNTRAINED[key]` (torch seed 0), exported to `path`."""
    if not _has_torch():
        return _from_folder(key, path)
    import torch

    from resnet_deploy.export import export_onnx
    from resnet_deploy.models import create_model

    torch.manual_seed(0)
    export_onnx(create_model("resnet18", width=UNTRAINED[key]).eval(), path)
    return path


def trained_onnx_from_folder(path: Path) -> Path:
    """The trained graph the torch side left in $RESNET_DEPLOY_TEST_ONNX_DIR (for runs without torch)."""
    return _from_folder(TRAINED, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--trained", type=Path, help="checkpoint to export as trained.onnx")
    args = parser.parse_args()
    for key in UNTRAINED:
        untrained_onnx(key, args.folder / f"{key}.onnx")
    if args.trained:
        from resnet_deploy.checkpoint import load_checkpoint
        from resnet_deploy.export import export_onnx

        export_onnx(load_checkpoint(args.trained)[0], args.folder / f"{TRAINED}.onnx")
    print(f"wrote {', '.join(sorted(p.name for p in args.folder.glob('*.onnx')))} to {args.folder}")


if __name__ == "__main__":
    main()
