"""User photos the Fashion-MNIST way: real test images saved as PNG/JPEG, inverted, enlarged, placed on
larger canvases, come back classified as the originals are."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from resnet_deploy import data
from resnet_deploy.errors import DataError, ResnetDeployError
from resnet_deploy.images import image_paths, load_images, to_fashion_mnist
from resnet_deploy.runners.onnxrt import OnnxRuntimeRunner

Image = pytest.importorskip("PIL.Image")

pytestmark = pytest.mark.runtime

COUNT = 120


def save_photo(image: np.ndarray, path: Path, variant: str) -> None:
    """One dataset image as a user might have it: as is, a dark-on-light photo, or on a larger canvas."""
    picture = Image.fromarray(image)
    if variant == "as-is.png":
        picture.save(path)
        return
    picture = Image.fromarray(255 - image).resize((112, 112), Image.Resampling.BICUBIC)
    if variant == "dark-on-light-4x.jpg":
        picture.save(path, quality=90)
        return
    canvas = Image.new("RGB", (200, 150), (250, 250, 250))
    canvas.paste(picture.resize((84, 84), Image.Resampling.BICUBIC).convert("RGB"), (30, 40))
    canvas.save(path)


@pytest.fixture(scope="module")
def test_split(data_dir):
    dataset = data.load_fashion_mnist(data_dir)
    return dataset.test_images[:COUNT], dataset.test_labels[:COUNT]


def predictions(onnx_path: Path, images: np.ndarray) -> np.ndarray:
    with OnnxRuntimeRunner(onnx_path, providers=["CPUExecutionProvider"]) as runner:
        return runner.infer({"input": data.normalize(images)})["logits"].argmax(1)


@pytest.mark.parametrize("variant, inverted", [("as-is.png", False), ("dark-on-light-4x.jpg", True),
                                               ("on-a-wider-canvas.png", True)])
def test_converted_photos_are_classified_like_the_originals(tmp_path, trained_onnx, test_split, variant, inverted):
    images, labels = test_split
    for index, image in enumerate(images):
        save_photo(image, tmp_path / f"{index:04d}-{variant}", variant)
    loaded = load_images([tmp_path])
    assert loaded.images.shape == (COUNT, 28, 28) and loaded.images.dtype == np.uint8
    assert loaded.names == [str(tmp_path / f"{i:04d}-{variant}") for i in range(COUNT)]
    assert loaded.inverted == [inverted] * COUNT
    assert all(("inverted" in note) == inverted for note in loaded.notes)
    # Light on black again, at the dataset's scale and place: an unconverted photo would differ by ~150.
    assert np.abs(loaded.images.astype(np.int16) - images).mean() < 25
    original, converted = predictions(trained_onnx, images), predictions(trained_onnx, loaded.images)
    agreement = (original == converted).mean()
    assert agreement >= 0.9, f"{variant}: only {agreement:.1%} of the photos keep the original's class"
    assert (converted == labels).mean() >= (original == labels).mean() - 0.05


def test_transparent_background_counts_as_white(tmp_path, test_split):
    image = test_split[0][0]
    rgba = np.zeros((56, 56, 4), np.uint8)
    rgba[14:42, 14:42, :3] = (255 - image)[..., None]
    rgba[14:42, 14:42, 3] = np.where(image > 10, 255, 0)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "cutout.png")
    loaded = load_images([tmp_path / "cutout.png"])
    assert loaded.inverted == [True] and loaded.images[0].max() > 200 and loaded.images[0][0, 0] == 0


def test_conversion_keeps_the_aspect_ratio_and_centres():
    tall = np.zeros((100, 40), np.uint8)
    tall[10:90, 15:25] = 200  # an 80 x 10 bar on black
    converted, inverted, note = to_fashion_mnist(tall)
    columns = np.nonzero(converted.max(0) > 50)[0]
    rows = np.nonzero(converted.max(1) > 50)[0]
    assert not inverted and "dark background, kept" in note
    assert rows.min() == 0 and rows.max() == 27  # longest edge fitted to 28
    assert 3 <= len(columns) <= 5 and abs((columns.min() + columns.max()) / 2 - 13.5) <= 1


@pytest.mark.parametrize("dark_on_light", [False, True])
def test_16_bit_png_is_scaled_not_clipped(tmp_path, test_split, dark_on_light):
    """A 16-bit grayscale PNG converts exactly as the same picture at 8 bits (issue 18: it was clipped at 255,
    so a dark background a little above 0 read as light and the picture was inverted)."""
    images = np.clip(test_split[0][:8].astype(np.int32) + 3, 0, 255)  # background 3, not 0
    for i, image in enumerate(255 - images if dark_on_light else images):
        Image.fromarray(image.astype(np.uint8)).save(tmp_path / f"{i}-8.png")
        Image.fromarray((image * 257).astype(np.uint16)).save(tmp_path / f"{i}-16.png")
        assert Image.open(tmp_path / f"{i}-16.png").mode.startswith("I;16")
    eight = load_images(sorted(tmp_path.glob("*-8.png")))
    sixteen = load_images(sorted(tmp_path.glob("*-16.png")))
    assert sixteen.inverted == eight.inverted == [dark_on_light] * 8
    assert np.array_equal(sixteen.images, eight.images)


def test_bad_inputs_name_the_file(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    Image.new("L", (30, 30), 255).save(tmp_path / "blank.png")
    with pytest.raises(DataError, match="notes.txt: not a PNG or JPEG"):
        image_paths([tmp_path / "notes.txt"])
    with pytest.raises(DataError, match="missing.jpg: no such file"):
        image_paths([tmp_path / "missing.jpg"])
    with pytest.raises(DataError, match="broken.png: cannot read image"):
        load_images([tmp_path / "broken.png"])
    with pytest.raises(DataError, match="blank.png: blank image"):
        load_images([tmp_path / "blank.png"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty: no .png"):
        image_paths([tmp_path / "empty"])
    with pytest.raises(ResnetDeployError, match="no images"):
        image_paths([])


# ---- `resnet-deploy infer` on photos ------------------------------------------------------------------------

def run_cli(*args) -> int:
    from resnet_deploy.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in args])
    return exit_info.value.code


def test_infer_on_a_folder_of_photos_gives_top_k_with_class_names_as_table_and_json(
        tmp_path, trained_onnx, test_split, monkeypatch, capsys):
    images, _ = test_split
    photos = tmp_path / "photos"
    photos.mkdir()
    for index, image in enumerate(images[:12]):
        save_photo(image, photos / f"{index:02d}.jpg", "dark-on-light-4x.jpg")
    (photos / "readme.txt").write_text("not a photo: skipped inside a folder")
    extra = tmp_path / "extra.png"
    save_photo(images[12], extra, "as-is.png")
    monkeypatch.chdir(tmp_path)
    assert run_cli("infer", trained_onnx, photos, extra, "--top-k", "3", "--json", "out/preds.json") == 0
    out = " ".join(capsys.readouterr().out.split())
    report = json.loads((tmp_path / "out" / "preds.json").read_text())
    assert report["source"] == "files" and report["top_k"] == 3 and report["class_names_from"] == "Fashion-MNIST"
    entries = report["images"]
    assert [e["file"] for e in entries] == [str(photos / f"{i:02d}.jpg") for i in range(12)] + [str(extra)]
    assert [e["inverted"] for e in entries] == [True] * 12 + [False]
    expected = predictions(trained_onnx, load_images([photos, extra]).images)
    for entry, predicted in zip(entries, expected):
        top = entry["predictions"]
        assert len(top) == 3 and top[0]["index"] == predicted and top[0]["class"] == data.CLASS_NAMES[predicted]
        assert top[0]["probability"] >= top[1]["probability"] >= top[2]["probability"] > 0
        assert sum(p["probability"] for p in top) <= 1 + 1e-9
    originals = predictions(trained_onnx, images[:13])
    assert np.mean([e["predictions"][0]["index"] == o for e, o in zip(entries, originals)]) >= 0.75
    first = entries[0]["predictions"][0]
    assert f"{first['class']} {first['probability'] * 100:.1f}%" in out and "13 images" in out


def test_infer_uses_the_class_names_of_the_bundle_the_artifact_lies_in(tmp_path, trained_onnx, test_split,
                                                                       monkeypatch):
    from resnet_deploy.device.bundle import MANIFEST

    bundle = tmp_path / "bundle"
    (bundle / "model").mkdir(parents=True)
    model = bundle / "model" / "tiny.onnx"
    model.write_bytes(trained_onnx.read_bytes())
    names = [f"class-{i}" for i in range(10)]
    (bundle / MANIFEST).write_text(json.dumps({"format": "resnet-deploy-bundle", "format_version": 1, "files": {},
                                               "class_names": names}))
    save_photo(test_split[0][0], tmp_path / "shoe.png", "as-is.png")
    monkeypatch.chdir(tmp_path)
    assert run_cli("infer", model, tmp_path / "shoe.png", "--top-k", "1") == 0
    report = json.loads((tmp_path / "reports" / "infer.json").read_text())
    assert report["class_names_from"] == f"bundle {bundle}"
    assert report["images"][0]["predictions"][0]["class"] in names


def test_infer_refuses_dataset_options_with_photos_and_names_a_bad_photo(tmp_path, trained_onnx, capsys):
    save_photo(np.full((28, 28), 200, np.uint8), tmp_path / "ok.png", "as-is.png")
    assert run_cli("infer", trained_onnx, tmp_path / "ok.png", "--count", "4") == 2
    assert "--count choose dataset images; drop them when giving IMAGES" in capsys.readouterr().err
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    assert run_cli("infer", trained_onnx, tmp_path / "broken.jpg", "--json", tmp_path / "r.json") == 2
    err = capsys.readouterr().err
    assert "broken.jpg: cannot read image" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r.json").exists()


def test_infer_on_the_dataset_writes_top_k_json(tmp_path, trained_onnx, test_split, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert run_cli("infer", trained_onnx, "--count", "40", "--offset", "10", "--top-k", "2") == 0
    report = json.loads((tmp_path / "reports" / "infer.json").read_text())
    expected = predictions(trained_onnx, test_split[0][10:50])
    assert [e["index"] for e in report["images"]] == list(range(10, 50))
    assert [e["predictions"][0]["index"] for e in report["images"]] == expected.tolist()
    assert report["top1"] == pytest.approx((expected == test_split[1][10:50]).mean())
