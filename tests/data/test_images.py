"""Decoding images of every mode PIL opens into the model's 8-bit RGB (data.common.to_rgb8)."""

import numpy as np
import pytest
import torch
from PIL import Image

from retinanet.data.common import DatasetError, load_image, load_photo


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


def _photo_like(h: int = 48, w: int = 64) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    noise = np.random.default_rng(0).normal(0, 12, (h, w, 3))
    smooth = np.stack([np.sin(x / 9 + c) * 90 + np.cos(y / 7) * 30 + 128 for c in range(3)], -1)
    return (smooth + noise).clip(0, 255).astype(np.uint8)


@pytest.mark.parametrize("name,mode", [("rgb.jpg", "RGB"), ("grey.jpg", "L"), ("rgb.png", "RGB"), ("grey.png", "L")])
def test_the_fast_decoder_gives_pils_pixels(tmp_path, name, mode):
    """8-bit RGB / grey JPEG and PNG go through TorchCodec's decoder, uint8 to the model: the
    same pixels as PIL's decode + convert("RGB"), and load_image's float is exactly them / 255."""
    import torchcodec.decoders

    image = Image.fromarray(_photo_like()).convert(mode)
    image.save(tmp_path / name, quality=90)
    pil = np.array(Image.open(tmp_path / name).convert("RGB"))
    fast = load_image(tmp_path / name, dtype=torch.uint8)
    assert fast.dtype == torch.uint8 and fast.shape == (3, 48, 64)
    np.testing.assert_array_equal(fast.permute(1, 2, 0).numpy(), pil)
    np.testing.assert_array_equal(
        torchcodec.decoders.decode_image(str(tmp_path / name), mode="RGB").numpy(), fast.numpy()
    )  # it is the fast path that ran, not PIL's (same pixels either way)
    assert torch.equal(load_image(tmp_path / name), fast.float() / 255)


@pytest.mark.parametrize("name", ["cut.jpg", "cut.png"])
def test_a_truncated_file_is_an_error_that_names_it(tmp_path, name):
    Image.fromarray(_photo_like()).save(tmp_path / name, quality=90)
    data = (tmp_path / name).read_bytes()
    (tmp_path / name).write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError, match=rf"cannot decode image file .*{name}"):
        load_image(tmp_path / name)


def test_an_exif_turned_photo_is_turned_by_load_photo_only(tmp_path):
    array = _photo_like(20, 30)
    exif = Image.Exif()
    exif[0x0112] = 6  # turned 90 degrees clockwise for display
    Image.fromarray(array).save(tmp_path / "turned.jpg", exif=exif, quality=95)
    stored = load_image(tmp_path / "turned.jpg", dtype=torch.uint8)
    shown, orientation = load_photo(tmp_path / "turned.jpg")
    assert orientation == 6 and stored.shape == (3, 20, 30) and shown.shape == (3, 30, 20)
    np.testing.assert_array_equal(shown.numpy(), stored.rot90(-1, dims=(1, 2)).numpy())
