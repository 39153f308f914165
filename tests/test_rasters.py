"""Rasters through rasterio: reading bands, dtypes and masks; windowed atomic writing with the
nodata kept; a clear message when rasterio is missing."""

import sys

import numpy as np
import pytest

rasterio = pytest.importorskip("rasterio")
from rasterio import Affine  # noqa: E402

from neurop_jax.errors import InputError  # noqa: E402
from neurop_jax.io import rasters  # noqa: E402
from neurop_jax.io.images import write_image  # noqa: E402


def make_raster(path, data, *, nodata_value=None, mask=None, alpha=False, crs="EPSG:32617",
                pixel=0.5, descriptions=None):
  """A GeoTIFF of ``data`` ``(C, h, w)`` with a UTM georeference, a tag, band descriptions and
  optionally a nodata value, an internal mask ``(h, w)`` bool (True = data) or an alpha band
  (from ``mask``)."""
  count, height, width = data.shape
  transform = Affine(pixel, 0, 404200.0, 0, -pixel, 3285100.0)
  profile = dict(driver="GTiff", width=width, height=height, count=count + alpha,
                 dtype=data.dtype.name, crs=crs, transform=transform, compress="lzw")
  if nodata_value is not None:
    profile["nodata"] = nodata_value
  with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True):
    with rasterio.open(path, "w", **profile) as dst:
      dst.write(data, indexes=list(range(1, count + 1)))
      if alpha:
        top = np.iinfo(data.dtype).max if data.dtype.kind in "iu" else 1
        dst.write((mask * top).astype(data.dtype), count + 1)
        dst.colorinterp = [*dst.colorinterp[:count], rasterio.enums.ColorInterp.alpha]
      elif mask is not None:
        dst.write_mask(mask.astype(np.uint8) * 255)
      dst.update_tags(SOURCE="synthetic")
      for band, text in enumerate(descriptions or [], start=1):
        dst.set_band_description(band, text)
  return path


def make_geotiff(path, hw=(20, 24), crs="EPSG:32617", pixel=0.5):
  """A small 3-band uint8 GeoTIFF with random pixels."""
  pixels = np.random.default_rng(0).integers(0, 256, (3, *hw), dtype=np.uint8)
  return make_raster(path, pixels, crs=crs, pixel=pixel)


def test_is_geotiff(tmp_path):
  assert rasters.is_geotiff(make_geotiff(tmp_path / "geo.tif"))
  write_image(tmp_path / "plain.tif", np.zeros((8, 8, 3), np.uint8))
  assert not rasters.is_geotiff(tmp_path / "plain.tif")
  assert not rasters.is_geotiff(tmp_path / "missing.tif")


@pytest.mark.parametrize("kind", ["none", "nodata", "internal", "alpha"])
def test_open_and_read_bands_with_each_mask_kind(tmp_path, kind):
  data = np.arange(4 * 6 * 5, dtype=np.uint16).reshape(4, 6, 5) + 1
  valid = np.ones((6, 5), bool)
  valid[:2, :3] = False
  options = {"nodata": dict(nodata_value=0), "internal": dict(mask=valid),
             "alpha": dict(mask=valid, alpha=True), "none": {}}[kind]
  if kind == "nodata":
    data[:, ~valid] = 0
  path = make_raster(tmp_path / "in.tif", data, descriptions=["red", "green", "blue", "nir"],
                     **options)
  info = rasters.open_raster(path, channels=3, bands=(4, 3, 2))
  assert (info.height, info.width, info.dtype, info.bands, info.mask) == (6, 5, np.uint16,
                                                                          (4, 3, 2), kind)
  assert info.profile["descriptions"][:4] == ("red", "green", "blue", "nir")
  values, read_valid = rasters.read_bands(info)
  np.testing.assert_array_equal(values, np.moveaxis(data[[3, 2, 1]], 0, -1))
  np.testing.assert_array_equal(read_valid, valid if kind != "none" else np.ones_like(valid))


def test_band_choice_errors_name_the_option(tmp_path):
  path = make_raster(tmp_path / "in.tif", np.ones((4, 8, 8), np.uint16))
  with pytest.raises(InputError, match=r"has 4 bands and the model reads 3: .*--bands"):
    rasters.open_raster(path, channels=3)
  with pytest.raises(InputError, match=r"--bands 5,1,2 .* give 3 of its bands 1,2,3,4"):
    rasters.open_raster(path, channels=3, bands=(5, 1, 2))
  with pytest.raises(InputError, match="--bands must be"):
    rasters.parse_bands("4;3;2")
  assert rasters.parse_bands("4,3,2") == (4, 3, 2)


def test_writer_writes_windows_atomically_and_failures_leave_nothing(tmp_path):
  data = np.full((3, 10, 12), 7, np.int16)
  info = rasters.open_raster(make_raster(tmp_path / "in.tif", data, nodata_value=-9999), 3)
  profile = rasters.output_profile(info, (25, 30))
  out = tmp_path / "out" / "x.tif"
  with rasters.RasterWriter(out, profile, cog=False) as writer:
    writer.write((0, 0), np.full((25, 16, 3), 5, np.int16), np.ones((25, 16), bool))
    assert not out.exists()
    writer.write((0, 16), np.full((25, 14, 3), -9999, np.int16), np.zeros((25, 14), bool))
  with rasterio.open(out) as dst:
    assert dst.nodata == -9999 and dst.dtypes[0] == "int16" and dst.count == 3
    np.testing.assert_allclose(dst.res, (0.2, 0.2))
    np.testing.assert_array_equal(dst.read(1)[:, :16], 5)
    np.testing.assert_array_equal(dst.read_masks(1)[:, 16:], 0)
  with pytest.raises(RuntimeError, match="boom"):
    with rasters.RasterWriter(tmp_path / "out" / "y.tif", profile, cog=True) as writer:
      writer.write((0, 0), np.full((25, 30, 3), 5, np.int16), np.ones((25, 30), bool))
      raise RuntimeError("boom")
  assert sorted(p.name for p in out.parent.iterdir()) == ["x.tif"]


@pytest.mark.parametrize("dtype,nodata_value,moved", [(np.uint8, 255, 254), (np.uint16, 0, 1),
                                                     (np.float32, -1.0, -1 + 2**-20)])
def test_data_equal_to_the_nodata_value_moves_off_it(tmp_path, dtype, nodata_value, moved):
  data = np.full((3, 8, 8), 7, dtype)
  info = rasters.open_raster(make_raster(tmp_path / "in.tif", data, nodata_value=nodata_value), 3)
  valid = np.ones((8, 8), bool)
  valid[0] = False
  with rasters.RasterWriter(tmp_path / "out.tif", rasters.output_profile(info, (8, 8))) as out:
    out.write((0, 0), np.full((8, 8, 3), nodata_value, dtype), valid)
  with rasterio.open(tmp_path / "out.tif") as dst:
    pixels = dst.read()
    np.testing.assert_array_equal(pixels[:, 1:], np.asarray(moved, dtype))
    np.testing.assert_array_equal(pixels[:, 0], nodata_value)
    np.testing.assert_array_equal(dst.dataset_mask() > 0, valid)


def test_missing_rasterio_names_the_extra(tmp_path, monkeypatch):
  monkeypatch.setitem(sys.modules, "rasterio", None)
  with pytest.raises(InputError, match=r"pip install 'neurop_jax\[geo\]'"):
    rasters.open_raster(tmp_path / "in.tif", 3)
