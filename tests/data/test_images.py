"""Decoding images of every mode PIL opens into the model's 8-bit RGB (data.common.to_rgb8)."""

import numpy as np
import pytest
from PIL import Image

from retinanet.data.common import load_image


def _load(tmp_path, image: Image.Image, name: str):
    image.save(tmp_path / name)
    return load_image(tmp_path / name)


def test_16_bit_png_is_scaled_not_clipped(tmp_path):
    # A 16-bit grey PNG at half range: PIL's convert("RGB") clips it to white (1.0).
    grey = np.array([[0, 32768, 65535]], dtype=np.uint16)
    x = _load(tmp_path, Image.fromarray(grey), "g16.png")
    assert Image.open(tmp_path / "g16.png").mode == "I;16"
    assert x.shape == (3, 1, 3)
    np.testing.assert_allclose(x[0, 0].numpy(), [0.0, 128 / 255, 1.0], atol=1e-6)
    assert (x[0] == x[1]).all() and (x[1] == x[2]).all()


def test_32_bit_integer_and_float_images(tmp_path):
    ints = _load(tmp_path, Image.fromarray(np.array([[0, 257 * 100, 70000]], dtype=np.int32)), "i32.tif")
    np.testing.assert_allclose(ints[0, 0].numpy(), [0.0, 100 / 255, 1.0], atol=1e-6)
    floats = _load(tmp_path, Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32)), "f.tif")
    np.testing.assert_allclose(floats[0, 0].numpy(), [0.0, 128 / 255, 1.0], atol=1e-6)  # PIL: all 0


@pytest.mark.parametrize("mode", ["LA", "RGBA", "P"])
def test_transparent_pixels_are_black(tmp_path, mode):
    # A red pixel hidden behind alpha 0 beside an opaque green one.
    rgba = Image.fromarray(np.array([[[255, 0, 0, 0], [0, 200, 0, 255]]], dtype=np.uint8), "RGBA")
    if mode == "P":
        image = rgba.convert("RGB").convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
        red = image.getpixel((0, 0))
        image.info["transparency"] = red
        name = "p.png"
    else:
        image = rgba.convert(mode)
        name = f"{mode}.png"
    x = _load(tmp_path, image, name)
    assert x[:, 0, 0].tolist() == [0.0, 0.0, 0.0]  # not the hidden red
    assert x[:, 0, 1].max() > 0.4  # the opaque pixel is kept (grey 117 in LA)
