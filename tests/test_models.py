"""The ResNet zoo: every model runs forward and backward; counts and names follow the paper and torchvision."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

from resnet_deploy.cli import main
from resnet_deploy.models import (BasicBlock, Bottleneck, ResNet, ZeroPadShortcut, count_macs, count_parameters,
                                  create_model, list_models)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Small tensors on a shared 2-core machine: a second thread spins and costs 10-100x."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("name", list_models())
def test_forward_and_backward_at_28x28(name):
    model = create_model(name)
    assert model.training
    logits = model(torch.randn(2, 1, 28, 28))
    assert logits.shape == (2, 10)
    logits.sum().backward()
    assert model.conv1.weight.grad is not None and model.conv1.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("name, millions", [("resnet18", 11.69), ("resnet34", 21.80), ("resnet50", 25.56),
                                            ("resnet101", 44.55), ("resnet152", 60.19)])
def test_parameter_counts_match_the_paper(name, millions):
    model = create_model(name, stem="imagenet", in_channels=3, num_classes=1000)
    assert round(count_parameters(model) / 1e6, 2) == millions


def torchvision_resnet18_keys() -> set[str]:
    """The state-dict keys of torchvision's resnet18, from its documented structure."""
    bn = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    keys = {"conv1.weight", "fc.weight", "fc.bias", *(f"bn1.{k}" for k in bn)}
    for layer in range(1, 5):
        for block in range(2):
            prefix = f"layer{layer}.{block}"
            keys |= {f"{prefix}.conv1.weight", f"{prefix}.conv2.weight"}
            keys |= {f"{prefix}.bn{i}.{k}" for i in (1, 2) for k in bn}
            if layer > 1 and block == 0:
                keys |= {f"{prefix}.downsample.0.weight", *(f"{prefix}.downsample.1.{k}" for k in bn)}
    return keys


def test_parameter_names_follow_torchvision():
    model = create_model("resnet18", stem="imagenet", in_channels=3, num_classes=1000)
    assert set(model.state_dict()) == torchvision_resnet18_keys()


def test_convolutions_carry_no_bias():
    model = create_model("resnet50")
    assert all(m.bias is None for m in model.modules() if isinstance(m, torch.nn.Conv2d))


def test_shortcut_options():
    a, b, c = (create_model("resnet18", shortcut=s, width=0.125) for s in "ABC")
    assert isinstance(a.layer2[0].downsample, ZeroPadShortcut)
    assert a.layer1[0].downsample is None and count_parameters(a) < count_parameters(b) < count_parameters(c)
    assert b.layer1[0].downsample is None and b.layer2[0].downsample is not None
    assert all(block.downsample is not None for layer in (c.layer1, c.layer2) for block in layer)
    for model in (a, b, c):
        assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_zero_pad_shortcut_pads_channels_and_subsamples():
    out = ZeroPadShortcut(4, 8, 2)(torch.ones(1, 4, 6, 6))
    assert out.shape == (1, 8, 3, 3) and out[:, 4:].abs().sum() == 0 and out[:, :4].min() == 1


def test_preact_blocks_normalize_before_convolving():
    model = create_model("preact_resnet18", width=0.25)
    block = model.layer1[0]
    assert block.preact and block.bn1.num_features == block.conv1.in_channels
    assert isinstance(model.final_bn, torch.nn.BatchNorm2d)


def test_bottleneck_expands_by_four_and_width_scales_stages():
    model = create_model("resnet50", width=0.5)
    assert isinstance(model.layer1[0], Bottleneck) and model.fc.in_features == 256 * 4
    assert isinstance(create_model("resnet34").layer1[0], BasicBlock)


def test_imagenet_stem_downsamples_by_four():
    model = create_model("resnet18", stem="imagenet", width=0.25)
    stem = model.maxpool(model.conv1(torch.randn(1, 1, 28, 28)))
    assert stem.shape[-1] == 7


def test_count_macs_by_hand():
    model = ResNet(BasicBlock, [1, 1, 1, 1], width=1 / 64)
    # widths 1,2,4,8 at 28,14,7,4: conv1 1*9*784; layer1 2x(1*9*784); layer2 2*9*196 + 2*2*9*196 + 1*2*196;
    # layer3 4*2*9*49 + 4*4*9*49 + 2*4*49; layer4 8*4*9*16 + 8*8*9*16 + 4*8*16; fc 8*10.
    expected = (9 * 784 + 2 * 9 * 784 + 2 * 9 * 196 + 4 * 9 * 196 + 2 * 196 + 8 * 9 * 49 + 16 * 9 * 49 + 8 * 49
                + 32 * 9 * 16 + 64 * 9 * 16 + 32 * 16 + 80)
    assert count_macs(model) == expected


@pytest.mark.parametrize("kwargs", [{"shortcut": "D"}, {"stem": "tiny"}, {"width": 0}])
def test_bad_arguments_raise(kwargs):
    with pytest.raises(ValueError):
        create_model("resnet18", **kwargs)


def test_unknown_model_names_the_choices():
    with pytest.raises(KeyError, match="resnet18"):
        create_model("resnet19")


def test_models_command_lists_the_zoo(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["models", "--width", "0.125", "--json", str(tmp_path / "zoo.json")])
    assert exit_info.value.code == 0
    rows = {row["name"]: row for row in json.loads((tmp_path / "zoo.json").read_text())}
    assert list(rows) == list_models()
    assert [rows[f"resnet{d}"]["depth"] for d in (18, 34, 50, 101, 152)] == [18, 34, 50, 101, 152]
    resnet50 = create_model("resnet50", width=0.125)
    assert rows["resnet50"]["parameters"] == count_parameters(resnet50)
    assert rows["resnet50"]["macs"] == count_macs(resnet50)
    assert rows["preact_resnet34"]["block"] == "BasicBlock" and rows["preact_resnet34"]["preact"]
    assert "preact_resnet152" in capsys.readouterr().out


def test_models_help_has_an_example(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["models", "--help"])
    assert exit_info.value.code == 0
    assert "resnet-deploy models --width" in capsys.readouterr().out


def test_torch_free_name_list_matches_the_registry():
    from resnet_deploy.model_options import MODEL_NAMES

    assert sorted(MODEL_NAMES) == sorted(list_models())


def test_preact_models_rebuild_from_their_own_config(tmp_path):
    from resnet_deploy.checkpoint import load_checkpoint, save_checkpoint

    torch.manual_seed(0)
    model = create_model("preact_resnet18", width=0.125).eval()
    loaded, meta = load_checkpoint(save_checkpoint(tmp_path / "preact.pt", model))
    x = torch.randn(2, 1, 28, 28)
    assert meta["model"]["preact"] and torch.equal(model(x), loaded(x))
