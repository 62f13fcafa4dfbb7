"""The user's own PNG/JPEG photos, converted the way Fashion-MNIST was made from Zalando's product shots.

Xiao, Rasul and Vollgraf (2017, arXiv:1708.07747, section 2): trim the edges close to the colour of
the corner pixels (within 5% of the intensity range), resize the longest edge to 28, extend the
shortest edge to 28 with the image centred, negate the intensities, 8-bit grayscale. So the
dataset shows a light object on a black background. Here:
- grayscale after EXIF rotation; transparent pixels count as the white studio background;
- the background is the median of the border pixels; a light one (> 127) means a dark-on-light
  photo, which is inverted; a dark one means the photo already has the dataset's polarity;
- trim rows and columns within 5% of the background, fit the longest edge into 28 keeping the
  aspect ratio (Pillow's antialiased Lanczos, not the paper's subsampling: user photos are large),
  centre on a 28 x 28 canvas of the background, apply the polarity, then stretch so the background
  is 0 as in the dataset. The paper's sharpening step is left out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from resnet_deploy.errors import DataError, ResnetDeployError

SIZE = 28
SUFFIXES = (".png", ".jpg", ".jpeg")
TRIM_TOLERANCE = 0.05 * 255
LIGHT_BACKGROUND = 127


@dataclass(frozen=True)
class UserImages:
    """uint8 images (N, 28, 28) in the dataset's polarity, their file names, and how each was converted."""

    images: np.ndarray
    names: list[str]
    inverted: list[bool]
    notes: list[str] = field(default_factory=list)


def image_paths(inputs: Sequence[str | Path]) -> list[Path]:
    """The PNG/JPEG files named, and those directly inside named folders (sorted by name)."""
    paths: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            found = sorted(p for p in item.iterdir() if p.is_file() and p.suffix.lower() in SUFFIXES)
            if not found:
                raise DataError(f"{item}: no {'/'.join(SUFFIXES)} files in this folder")
            paths += found
        elif not item.is_file():
            raise DataError(f"{item}: no such file or folder")
        elif item.suffix.lower() not in SUFFIXES:
            raise DataError(f"{item}: not a PNG or JPEG file (suffix {item.suffix or 'none'!r})")
        else:
            paths.append(item)
    if not paths:
        raise ResnetDeployError("no images given")
    return paths


def _pillow():
    try:
        from PIL import Image, ImageOps
    except ImportError as exc:
        raise ResnetDeployError("reading PNG/JPEG files needs Pillow: pip install 'resnet-deploy[images]'") from exc
    return Image, ImageOps


def read_gray(path: Path) -> np.ndarray:
    """The photo as uint8 grayscale (H, W), upright, transparency on white; unreadable files raise `DataError`."""
    Image, ImageOps = _pillow()
    try:
        with Image.open(path) as image:
            image = ImageOps.exif_transpose(image)
            if image.mode.startswith("I"):  # 16-bit grayscale: Pillow's own conversion clips at 255
                return _scaled_to_8_bits(image)
            if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
                rgba = image.convert("RGBA")
                image = Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba)
            return np.asarray(image.convert("L"), dtype=np.uint8)
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"{path}: cannot read image: {exc}") from exc


def _scaled_to_8_bits(image) -> np.ndarray:
    """A 16-bit (or 32-bit integer) grayscale image scaled, not clipped, to uint8; a transparent value on white."""
    pixels = np.asarray(image).astype(np.float64)
    scaled = np.clip(np.rint(pixels / 257.0), 0, 255).astype(np.uint8)
    transparent = image.info.get("transparency")
    if isinstance(transparent, int):
        scaled[pixels == transparent] = 255
    return scaled


def to_fashion_mnist(gray: np.ndarray) -> tuple[np.ndarray, bool, str]:
    """One grayscale photo -> (28 x 28 uint8 in the dataset's polarity, inverted?, what was done)."""
    Image, _ = _pillow()
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    background = int(np.median(border))
    inverted = background > LIGHT_BACKGROUND
    rows, cols = np.nonzero(np.abs(gray.astype(np.int16) - background) > TRIM_TOLERANCE)
    if rows.size == 0:
        raise DataError(f"blank image: no pixel differs from the background ({background}) by more than 5%")
    crop = gray[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    height, width = crop.shape
    scale = SIZE / max(height, width)
    fitted = Image.fromarray(crop).resize(
        (max(1, round(width * scale)), max(1, round(height * scale))), Image.Resampling.LANCZOS
    )
    canvas = Image.new("L", (SIZE, SIZE), background)
    canvas.paste(fitted, ((SIZE - fitted.width) // 2, (SIZE - fitted.height) // 2))
    pixels = np.asarray(canvas, dtype=np.float32)
    dark = 255 - background if inverted else background
    if inverted:
        pixels = 255.0 - pixels
    stretched = (pixels - dark) * (255.0 / (255 - dark))
    note = (
        f"border median {background}: "
        f"{'light background, inverted to a light object on black' if inverted else 'dark background, kept'}; "
        f"trimmed to {width}x{height}, fitted into {fitted.width}x{fitted.height}"
    )
    return np.clip(np.rint(stretched), 0, 255).astype(np.uint8), inverted, note


def load_images(inputs: Sequence[str | Path]) -> UserImages:
    """Read PNG/JPEG files (or every such file in given folders) and convert each the Fashion-MNIST way."""
    converted, names, inverted, notes = [], [], [], []
    for path in image_paths(inputs):
        try:
            image, flipped, note = to_fashion_mnist(read_gray(path))
        except DataError as exc:
            message = str(exc)
            raise DataError(message if message.startswith(str(path)) else f"{path}: {message}") from exc
        converted.append(image)
        names.append(str(path))
        inverted.append(flipped)
        notes.append(note)
    return UserImages(np.stack(converted), names, inverted, notes)
