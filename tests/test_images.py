"""Tests of neurop_jax.data.images: every image kind gives RGB [0, 1] or a named error."""

import os
import warnings

import numpy as np
import pytest
from PIL import Image

from neurop_jax.io.images import decode_image, image_size, list_images, read_image, write_image


def _rgb8(h=6, w=5, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _read_warns(path, match):
  with pytest.warns(UserWarning, match=match) as record:
    image = read_image(path)
  assert any(str(path) in str(w.message) for w in record)
  return image


def test_rgb_png_is_read_exactly_without_warning(tmp_path):
  pixels = _rgb8()
  Image.fromarray(pixels).save(tmp_path / "a.png")
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    image = read_image(tmp_path / "a.png")
  assert image.dtype == np.float32 and image.shape == (6, 5, 3)
  np.testing.assert_array_equal(image, pixels.astype(np.float32) / 255)


def test_grayscale_becomes_rgb_with_a_warning(tmp_path):
  gray = _rgb8()[..., 0]
  Image.fromarray(gray, mode="L").save(tmp_path / "g.png")
  image = _read_warns(tmp_path / "g.png", "grayscale")
  for c in range(3):
    np.testing.assert_array_equal(image[..., c], gray / np.float32(255))


def test_palette_becomes_rgb_with_a_warning(tmp_path):
  palette = Image.fromarray(_rgb8()).convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
  palette.save(tmp_path / "p.png")
  image = _read_warns(tmp_path / "p.png", "palette")
  np.testing.assert_array_equal(image, np.asarray(palette.convert("RGB")) / np.float32(255))


def test_rgba_is_composited_on_white(tmp_path):
  rgba = np.concatenate([_rgb8(), np.full((6, 5, 1), 51, np.uint8)], axis=-1)
  Image.fromarray(rgba, mode="RGBA").save(tmp_path / "t.png")
  image = _read_warns(tmp_path / "t.png", "composited on white")
  alpha = 51 / 255
  np.testing.assert_allclose(image, rgba[..., :3] / 255 * alpha + (1 - alpha), atol=1e-6)


def test_opaque_rgba_drops_alpha(tmp_path):
  rgba = np.concatenate([_rgb8(), np.full((6, 5, 1), 255, np.uint8)], axis=-1)
  Image.fromarray(rgba, mode="RGBA").save(tmp_path / "o.png")
  image = _read_warns(tmp_path / "o.png", "alpha fully opaque, dropped")
  np.testing.assert_array_equal(image, rgba[..., :3] / np.float32(255))


def test_cmyk_jpeg_becomes_rgb(tmp_path):
  Image.fromarray(_rgb8(16, 16)).convert("CMYK").save(tmp_path / "c.jpg")
  image = _read_warns(tmp_path / "c.jpg", "CMYK")
  assert image.shape == (16, 16, 3) and 0 <= image.min() and image.max() <= 1


def test_sixteen_bit_grayscale_is_scaled_by_65535(tmp_path):
  values = np.array([[0, 1, 32768], [40000, 65534, 65535]], dtype=np.uint16)
  Image.fromarray(values).save(tmp_path / "g16.png")
  image = _read_warns(tmp_path / "g16.png", "16-bit")
  np.testing.assert_allclose(image[..., 1], values / 65535.0, rtol=1e-6)


def test_sixteen_bit_rgb_tiff_keeps_full_precision(tmp_path):
  tifffile = pytest.importorskip("tifffile")
  values = np.random.default_rng(0).integers(0, 65536, (4, 5, 3)).astype(np.uint16)
  tifffile.imwrite(tmp_path / "rgb16.tif", values)
  image = _read_warns(tmp_path / "rgb16.tif", r"16-bit RGB TIFF, scaled by 1/65535 \(.*value_mapping")
  np.testing.assert_allclose(image, values / 65535.0, rtol=1e-6)


def test_float_tiff_in_unit_range_is_kept_and_out_of_range_is_an_error(tmp_path):
  values = np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4)
  Image.fromarray(values, mode="F").save(tmp_path / "f.tif")
  np.testing.assert_array_equal(_read_warns(tmp_path / "f.tif", "float")[..., 2], values)
  Image.fromarray(values * 255, mode="F").save(tmp_path / "big.tif")
  with pytest.raises(ValueError, match="big.tif"):
    read_image(tmp_path / "big.tif")


@pytest.mark.parametrize("content", [b"not an image at all", b"\x89PNG\r\n\x1a\n" + b"\0" * 40])
def test_corrupt_file_raises_value_error_naming_it(tmp_path, content):
  path = tmp_path / "broken.png"
  path.write_bytes(content)
  with pytest.raises(ValueError, match="broken.png"):
    read_image(path)


def test_truncated_png_raises_value_error(tmp_path):
  Image.fromarray(_rgb8(64, 64)).save(tmp_path / "full.png")
  data = (tmp_path / "full.png").read_bytes()
  (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
  with pytest.raises(ValueError, match="cut.png"):
    read_image(tmp_path / "cut.png")


def test_allow_convert_false_refuses_conversion(tmp_path):
  Image.fromarray(_rgb8()[..., 0], mode="L").save(tmp_path / "g.png")
  with pytest.raises(ValueError, match="g.png"):
    read_image(tmp_path / "g.png", allow_convert=False)


def test_decode_image_names_the_source_in_errors():
  with pytest.raises(ValueError, match="record 7"):
    decode_image(b"garbage", "record 7")


def test_write_image_round_trips_and_leaves_no_temp_file(tmp_path):
  pixels = np.random.default_rng(1).random((7, 9, 3)).astype(np.float32)
  write_image(tmp_path / "out" / "x.png", pixels)
  assert os.listdir(tmp_path / "out") == ["x.png"]
  np.testing.assert_allclose(read_image(tmp_path / "out" / "x.png"), pixels, atol=0.5 / 255 + 1e-7)
  uint8 = _rgb8()
  write_image(tmp_path / "out" / "x.png", uint8)
  np.testing.assert_array_equal(read_image(tmp_path / "out" / "x.png") * 255, uint8)
  with pytest.raises(ValueError, match="suffix"):
    write_image(tmp_path / "x.bmp", uint8)


def test_list_images_is_sorted_filtered_and_skips_hidden(tmp_path):
  for name in ["b/2.PNG", "a/1.jpg", "a/0.tif", "c.tiff", "notes.txt", ".hidden/3.png", "d/.4.png"]:
    (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / name).write_bytes(b"")
  assert list_images(tmp_path) == ["a/0.tif", "a/1.jpg", "b/2.PNG", "c.tiff"]


@pytest.mark.parametrize("orientation, turn", [(6, lambda a: np.rot90(a, k=-1)),
                                               (8, lambda a: np.rot90(a, k=1)),
                                               (3, lambda a: np.rot90(a, k=2))])
def test_an_exif_rotated_jpeg_is_read_as_viewers_show_it(tmp_path, orientation, turn):
  """A camera JPEG stored sideways with EXIF orientation 6 (or 8, 3) is read upright, and its size
  from the header (``image_size``, what upsample plans its output with) is the upright one."""
  y, x = np.mgrid[0:24, 0:40]
  pixels = np.stack([y / 23, x / 39, 0.5 + 0 * x], -1)  # smooth: JPEG keeps it to ~1 level
  path = tmp_path / "photo.jpg"
  exif = Image.Exif()
  exif[0x0112] = orientation
  Image.fromarray(np.round(pixels * 255).astype(np.uint8)).save(path, quality=100, exif=exif)
  upright = turn(pixels)
  read = read_image(path)
  assert read.shape == upright.shape
  assert np.abs(read - upright).max() < 0.03
  assert image_size(path) == upright.shape[:2]
