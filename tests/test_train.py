"""Training loop: augmentation, resume after an interruption, checkpoint contents, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from resnet_deploy.checkpoint import load_checkpoint
from resnet_deploy.cli import main
from resnet_deploy.errors import CheckpointError, ResnetDeployError
from resnet_deploy.train import TrainConfig, augment, random_erase, resume_config, train

QUICK = dict(width=0.0625, epochs=2, train_limit=512, batch_size=64, threads=1, eval_batch_size=500)


class Interrupted(Exception):
    pass


def test_augment_keeps_shape_and_moves_pixels():
    generator = torch.Generator().manual_seed(0)
    images = torch.arange(4 * 28 * 28, dtype=torch.float32).view(4, 1, 28, 28)
    out = augment(images, TrainConfig(crop_padding=2, hflip=True), generator)
    assert out.shape == images.shape
    assert not torch.equal(out, images)
    untouched = augment(images, TrainConfig(crop_padding=0, hflip=False), generator)
    assert torch.equal(untouched, images)


def test_random_erasing_zeroes_a_box_in_selected_images_only():
    images = torch.ones(64, 1, 28, 28)
    erased = random_erase(images, 0.5, torch.Generator().manual_seed(1))
    zeroed = (erased == 0).flatten(1).sum(1)
    assert 10 < int((zeroed > 0).sum()) < 54
    assert int(zeroed.max()) <= 0.25 * 28 * 28 + 28


@pytest.mark.slow
def test_resume_continues_exactly_where_training_stopped(tmp_path, data_dir):
    config = TrainConfig(**QUICK)
    straight = train(config, tmp_path / "straight", data_dir=data_dir)

    def stop_in_second_epoch(event, values):
        if event == "step" and values["epoch"] == 2:
            raise Interrupted

    with pytest.raises(Interrupted):
        train(config, tmp_path / "resumed", data_dir=data_dir, progress=stop_in_second_epoch)
    assert resume_config(tmp_path / "resumed") == config
    resumed = train(config, tmp_path / "resumed", data_dir=data_dir, resume=True)

    assert [h.epoch for h in resumed.history] == [1, 2]
    assert resumed.history[1].train_loss == pytest.approx(straight.history[1].train_loss, rel=1e-5)
    assert resumed.test_accuracy == pytest.approx(straight.test_accuracy, abs=1e-3)


@pytest.mark.slow
def test_resume_refuses_other_settings_and_threads_are_restored(tmp_path, data_dir):
    threads = torch.get_num_threads()
    config = TrainConfig(**{**QUICK, "epochs": 1, "threads": 1 if threads > 1 else 2})
    train(config, tmp_path, data_dir=data_dir)
    assert torch.get_num_threads() == threads
    with pytest.raises(CheckpointError, match=r"other settings: lr 0.01 \(the run used 0.2\)"):
        train(TrainConfig(**{**QUICK, "epochs": 1, "lr": 0.01}), tmp_path, data_dir=data_dir, resume=True)


@pytest.mark.parametrize("setting, value", [("lr", float("nan")), ("epochs", 0), ("width", -1.0),
                                            ("schedule", "step"), ("label_smoothing", 1.5)])
def test_settings_out_of_bounds_are_refused_before_training(tmp_path, setting, value):
    with pytest.raises(ResnetDeployError, match=f"training setting {setting}"):
        train(TrainConfig(**{**QUICK, setting: value}), tmp_path)
    assert not list(tmp_path.iterdir())


def test_resume_without_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="nothing to resume"):
        resume_config(tmp_path)


@pytest.mark.slow
def test_best_checkpoint_sidecar_has_what_later_stages_need(trained_checkpoint):
    model, meta = load_checkpoint(trained_checkpoint)
    assert meta["model"]["name"] == "resnet18" and meta["model"]["width"] == 0.125
    assert meta["normalization"] == {"mean": 0.2860, "std": 0.3530}
    assert len(meta["class_names"]) == 10
    assert set(meta["data"]["content_md5"]) == {"train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                                "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"}
    assert 0.6 < meta["accuracy"]["test"] <= 1.0
    assert meta["accuracy"]["val"] == max(h["val_accuracy"] for h in meta["history"])
    assert meta["training"]["width"] == 0.125
    assert not model.training


@pytest.mark.slow
def test_cli_train_then_evaluate_writes_reports(tmp_path, data_dir, capsys):
    run_dir = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--width", "0.0625", "--epochs", "1", "--train-limit", "256", "--batch-size", "64",
              "--out-dir", str(run_dir), "--data-dir", str(data_dir)])
    assert exit_info.value.code == 0
    assert ("memory format: contiguous, not channels-last: smallest convolution has 4 channels (< 8, unsafe in "
            "oneDNN on AVX2 CPUs)\n") in capsys.readouterr().out
    report_path = tmp_path / "eval.json"
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", "--checkpoint", str(run_dir / "best.pt"), "--data-dir", str(data_dir),
              "--json", str(report_path)])
    assert exit_info.value.code == 0
    report = json.loads(report_path.read_text())
    matrix = np.array(report["confusion_matrix"])
    assert matrix.shape == (10, 10) and matrix.sum() == 10000
    assert report["top1"] == pytest.approx(np.trace(matrix) / 10000)
    assert report_path.with_suffix(".png").stat().st_size > 1000


def test_cli_evaluate_missing_checkpoint_exits_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", "--checkpoint", str(tmp_path / "nope.pt")])
    assert exit_info.value.code == 2
    assert "nope.pt" in capsys.readouterr().err
