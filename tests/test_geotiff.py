"""GeoTIFF in, GeoTIFF out: the CRS kept, the pixel size scaled by 1/scale, atomic writes, and a
clear message when rasterio is missing."""

import sys

import numpy as np
import pytest

rasterio = pytest.importorskip("rasterio")
from rasterio import Affine  # noqa: E402

from neurop_jax import geotiff  # noqa: E402
from neurop_jax.data.images import write_image  # noqa: E402


def make_geotiff(path, hw=(20, 24), crs="EPSG:32617", pixel=0.5):
  """A small 3-band uint8 GeoTIFF with a UTM georeference and a dataset tag."""
  pixels = np.random.default_rng(0).integers(0, 256, (3, *hw), dtype=np.uint8)
  transform = Affine(pixel, 0, 404200.0, 0, -pixel, 3285100.0)
  with rasterio.open(path, "w", driver="GTiff", width=hw[1], height=hw[0], count=3,
                     dtype="uint8", crs=crs, transform=transform, compress="lzw") as dst:
    dst.write(pixels)
    dst.update_tags(SOURCE="synthetic")
  return path


def test_is_geotiff(tmp_path):
  assert geotiff.is_geotiff(make_geotiff(tmp_path / "geo.tif"))
  write_image(tmp_path / "plain.tif", np.zeros((8, 8, 3), np.uint8))
  assert not geotiff.is_geotiff(tmp_path / "plain.tif")
  assert not geotiff.is_geotiff(tmp_path / "missing.tif")


def test_round_trip_keeps_crs_and_scales_pixel_size(tmp_path):
  source = make_geotiff(tmp_path / "in.tif", hw=(20, 24), pixel=0.5)
  out_hw = (50, 60)  # scale 2.5
  profile = geotiff.scaled_profile(geotiff.read_profile(source), out_hw)
  pixels = np.random.default_rng(1).integers(0, 256, (*out_hw, 3), dtype=np.uint8)
  geotiff.write_geotiff(tmp_path / "out.tif", pixels, profile)
  with rasterio.open(source) as src, rasterio.open(tmp_path / "out.tif") as out:
    assert out.crs == src.crs
    assert (out.height, out.width, out.count) == (*out_hw, 3)
    np.testing.assert_allclose(out.res, (0.2, 0.2))
    np.testing.assert_allclose(out.bounds, src.bounds)
    np.testing.assert_array_equal(np.moveaxis(out.read(), 0, -1), pixels)
    assert out.tags()["SOURCE"] == "synthetic"
    assert out.profile["compress"] == src.profile["compress"]
  assert sorted(p.name for p in tmp_path.iterdir()) == ["in.tif", "out.tif"]


def test_failed_write_leaves_nothing(tmp_path):
  profile = geotiff.scaled_profile(geotiff.read_profile(make_geotiff(tmp_path / "in.tif")), (8, 8))
  out = tmp_path / "out" / "x.tif"
  with pytest.raises(ValueError, match="uint8"):
    geotiff.write_geotiff(out, np.zeros((8, 8, 3), np.float32), profile)
  with pytest.raises(rasterio.errors.CRSError):
    geotiff.write_geotiff(out, np.zeros((8, 8, 3), np.uint8), dict(profile, crs="not-a-crs"))
  assert not out.exists() and list(out.parent.iterdir()) == []


def test_missing_rasterio_names_the_extra(tmp_path, monkeypatch):
  monkeypatch.setitem(sys.modules, "rasterio", None)
  with pytest.raises(ImportError, match=r"pip install 'neurop_jax\[geo\]'"):
    geotiff.read_profile(tmp_path / "in.tif")
