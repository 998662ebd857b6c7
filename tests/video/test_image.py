"""read_image: images come in upright and at their true brightness, whatever their mode; bad paths are named."""
import cv2
import numpy as np
import pytest
from PIL import Image

from emo_jax.errors import VideoError
from emo_jax.video.image import read_image


def _portrait(h=48, w=32) -> np.ndarray:
    """An asymmetric RGB picture: a red block in the top-left corner on a mid-grey ground."""
    image = np.full((h, w, 3), 128, np.uint8)
    image[:8, :4] = (255, 0, 0)
    return image


def test_exif_orientation_is_applied(tmp_path):
    upright = _portrait()
    # Stored rotated 90 degrees clockwise with orientation 8 ("rotate 90 CW to display"), as phones write it.
    stored = np.ascontiguousarray(np.rot90(upright, k=-1))
    exif = Image.Exif()
    exif[0x0112] = 8
    path = str(tmp_path / "phone.jpg")
    Image.fromarray(stored).save(path, quality=100, exif=exif)

    image = read_image(path)

    assert image.shape == upright.shape
    assert np.abs(image.astype(int) - upright).mean() < 4
    assert image[2, 1, 0] > 200 and image[2, 1, 2] < 60  # the red corner is back at the top left


def test_16_bit_grey_png_keeps_its_brightness(tmp_path):
    ramp = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    path = str(tmp_path / "deep.png")
    Image.fromarray(ramp).save(path)
    assert Image.open(path).mode.startswith("I")  # the case PIL's convert("RGB") clips to near white

    image = read_image(path)

    expected = np.rint(ramp / 257.0).astype(np.uint8)
    assert image.dtype == np.uint8 and image.shape == (64, 64, 3)
    np.testing.assert_array_equal(image[..., 0], expected)
    np.testing.assert_array_equal(image[..., 0], image[..., 2])


def test_16_bit_colour_png_keeps_its_colours(tmp_path):
    colour = _portrait().astype(np.uint16) * 257
    path = str(tmp_path / "deep_rgb.png")
    cv2.imwrite(path, colour[..., ::-1])  # OpenCV writes 48-bit PNGs; BGR order

    image = read_image(path)

    assert np.abs(image.astype(int) - _portrait()).max() <= 1


def test_palette_and_transparent_images(tmp_path):
    palette_path = str(tmp_path / "palette.png")
    Image.fromarray(_portrait()).convert("P", palette=Image.Palette.ADAPTIVE, colors=4).save(palette_path)
    np.testing.assert_array_equal(read_image(palette_path), _portrait())

    rgba = np.zeros((16, 16, 4), np.uint8)  # fully transparent black, with one opaque red pixel
    rgba[3, 5] = (255, 0, 0, 255)
    rgba_path = str(tmp_path / "cutout.png")
    Image.fromarray(rgba).save(rgba_path)
    image = read_image(rgba_path)
    assert (image[0, 0] == 255).all()  # transparent is white, not the black stored under it
    np.testing.assert_array_equal(image[3, 5], (255, 0, 0))


def test_oversized_images_are_refused_before_decoding(tmp_path):
    path = str(tmp_path / "big.png")
    Image.fromarray(_portrait(64, 80)).save(path)
    with pytest.raises(VideoError, match=r"big.png.*80x64.*downscale"):
        read_image(path, max_pixels=64 * 64)


def test_bad_paths_say_what_is_wrong(tmp_path):
    with pytest.raises(VideoError, match="is a folder, not a file"):
        read_image(str(tmp_path))
    with pytest.raises(VideoError, match="does not exist"):
        read_image(str(tmp_path / "missing.png"))
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(VideoError, match="cannot read .*notes.png.* as an image"):
        read_image(str(tmp_path / "notes.png"))
