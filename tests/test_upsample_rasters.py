"""Satellite rasters through ``neurop_jax.cli.upsampling.upsample``: uint16 3- and 4-band, int16,
float32 and uint8 with alpha, each with a mask; dtype, bands, CRS, scaled transform, nodata, mask
and units kept; Cloud-Optimized output; K-sample spread.

The model is the micro preset with random weights and a zero MLP head, so that its prior is exactly
the bilinear interpolation of the input: a constant region must come back as the same value, in the
file's units, after the value mapping and its inverse.
"""

import functools

import jax
import numpy as np
import pytest

rasterio = pytest.importorskip("rasterio")
cogeo = pytest.importorskip("rio_cogeo.cogeo")

from test_rasters import make_raster  # noqa: E402

from neurop_jax.models.coords import make_cell, make_coord  # noqa: E402
from neurop_jax.cli.upsampling import upsample  # noqa: E402
from neurop_jax.inference.run import Run  # noqa: E402
from neurop_jax.models import make_model, model_config  # noqa: E402

LR_HW = (24, 20)
SCALE = 2.5


@functools.cache
def zero_head_model(channels):
  """The micro NeurOp-Diff for ``channels`` bands, random weights, the operator's head zeroed
  (initialised once per band count: compiling the init takes seconds)."""
  cfg = model_config("micro")
  cfg.channels = channels
  model = make_model(cfg)
  coord, cell = make_coord((8, 8))[None], make_cell((8, 8))[None]
  zeros = np.zeros((1, 8, 8, channels), np.float32)
  params = jax.jit(model.init)(jax.random.key(0), zeros, np.ones((1,), np.float32), zeros, coord,
                               cell)
  params = jax.tree.map(np.asarray, params)
  head = params["params"]["operator"]["fc2"]
  head.update(kernel=np.zeros_like(head["kernel"]), bias=np.zeros_like(head["bias"]))
  return model, params


CASES = {
    # name: dtype, bands, value mapping, constant value, mask kind, nodata value
    "uint16-3-nodata": (np.uint16, 3, "0:10000", 1234, "nodata", 0),
    "uint16-4-internal": (np.uint16, 4, "0:10000", 8765, "internal", None),
    "int16-3-nodata": (np.int16, 3, "-2000:10000", -321, "nodata", -9999),
    "float32-4-nodata": (np.float32, 4, "0:1", 0.4321, "nodata", -1.0),
    "uint8-3-alpha": (np.uint8, 3, None, 77, "alpha", None),
    "uint8-3-nodata-255": (np.uint8, 3, None, 222, "nodata", 255),
}


def make_scene(path, dtype, bands, constant, mask_kind, nodata_value):
  """An LR raster: random values, a constant left third, a nodata block at the bottom right."""
  rng = np.random.default_rng(0)
  lo, hi = {np.uint16: (1000, 9000), np.int16: (500, 9000), np.float32: (0.2, 0.8),
            np.uint8: (60, 200)}[dtype]  # away from the nodata values
  data = rng.uniform(lo, hi, (bands, *LR_HW)).astype(dtype)
  data[:, :, :7] = constant
  valid = np.ones(LR_HW, bool)
  valid[15:, 12:] = False
  options = {}
  if mask_kind == "nodata":
    data[:, ~valid] = nodata_value
    options["nodata_value"] = nodata_value
  elif mask_kind == "nan":  # holes of NaN, no nodata tag and no mask
    data[:, ~valid] = np.nan
  else:
    options.update(mask=valid, alpha=mask_kind == "alpha")
  descriptions = ["red", "green", "blue", "nir"][:bands]
  make_raster(path, data, descriptions=descriptions, **options)
  return valid


@pytest.mark.parametrize("case", list(CASES))
def test_prior_only_round_trips_a_raster(tmp_path, case):
  dtype, bands, mapping, constant, mask_kind, nodata_value = CASES[case]
  source = tmp_path / "in" / "scene.tif"
  source.parent.mkdir()
  valid = make_scene(source, dtype, bands, constant, mask_kind, nodata_value)
  model, params = zero_head_model(bands)
  [out] = upsample([source], tmp_path / "out", scale=SCALE, run=Run(model, params),
                   prior_only=True, values=mapping, progress=False)
  assert out.name == "scene_x2.5.tif"
  assert cogeo.cog_validate(out)[0], cogeo.cog_validate(out)
  out_hw = tuple(round(n * SCALE) for n in LR_HW)
  with rasterio.open(source) as src, rasterio.open(out) as dst:
    assert dst.dtypes[0] == np.dtype(dtype).name
    assert dst.count == src.count and dst.crs == src.crs
    assert dst.descriptions[:bands] == src.descriptions[:bands]
    assert dst.tags()["SOURCE"] == "synthetic"
    assert (dst.height, dst.width) == out_hw
    np.testing.assert_allclose(dst.res, np.array(src.res) / SCALE)
    np.testing.assert_allclose(dst.bounds, src.bounds)
    assert dst.nodata == src.nodata
    out_valid = dst.dataset_mask() > 0
    pixels = dst.read(list(range(1, bands + 1)))
    data = src.read(list(range(1, bands + 1)))
  rows = np.floor((np.arange(out_hw[0]) + 0.5) / SCALE).astype(int)
  cols = np.floor((np.arange(out_hw[1]) + 0.5) / SCALE).astype(int)
  np.testing.assert_array_equal(out_valid, valid[rows][:, cols])
  assert abs(out_valid.mean() - valid.mean()) < 1 / min(out_hw) * 2
  interior = pixels[:, 3:-3, 3:14]  # well inside the constant third (LR columns 0..6)
  tolerance = 1 if np.issubdtype(dtype, np.integer) else 1e-4
  np.testing.assert_allclose(interior, constant, atol=tolerance, rtol=0)
  # no bleeding: the model's input is the valid data and fills between its values, so (its prior
  # being bilinear) every valid output lies within the valid input's range, far from the nodata
  lo, hi = float(data[:, valid].min()), float(data[:, valid].max())
  assert lo - tolerance <= pixels[:, out_valid].min() and pixels[:, out_valid].max() <= hi + tolerance
  if mask_kind == "nodata":
    np.testing.assert_array_equal(pixels[:, ~out_valid], nodata_value)
    assert not np.any(pixels[:, out_valid] == nodata_value)


def test_nan_holes_without_a_nodata_tag_stay_holes(tmp_path):
  """A float32 raster with NaN holes and neither a nodata tag nor a mask: the holes are nodata
  (NaN in the output, which records NaN as its nodata value) and every other pixel is valid and
  finite, within the valid input's range (the NaNs never reach the operator's global attention,
  which would spread them over the whole image)."""
  source = tmp_path / "holes.tif"
  valid = make_scene(source, np.float32, 4, 0.4321, "nan", None)
  with rasterio.open(source) as src:
    assert src.nodata is None and np.isnan(src.read()).any()
    data = src.read()
  model, params = zero_head_model(4)
  [out] = upsample([source], tmp_path / "out", scale=SCALE, run=Run(model, params),
                   prior_only=True, values="0:1", progress=False)
  out_hw = tuple(round(n * SCALE) for n in LR_HW)
  with rasterio.open(out) as dst:
    assert np.isnan(dst.nodata)
    pixels = dst.read()
    out_valid = dst.dataset_mask() > 0
  rows = np.floor((np.arange(out_hw[0]) + 0.5) / SCALE).astype(int)
  cols = np.floor((np.arange(out_hw[1]) + 0.5) / SCALE).astype(int)
  np.testing.assert_array_equal(out_valid, valid[rows][:, cols])
  assert np.isnan(pixels[:, ~out_valid]).all()
  inside = pixels[:, out_valid]
  assert np.isfinite(inside).all()
  lo, hi = float(data[:, valid].min()), float(data[:, valid].max())
  assert lo - 1e-4 <= inside.min() and inside.max() <= hi + 1e-4
  np.testing.assert_allclose(pixels[:, 3:-3, 3:14], 0.4321, atol=1e-4, rtol=0)


@pytest.mark.slow  # compiles the tiled sampler for 4 bands: about 10 s
def test_samples_write_the_mean_and_the_spread(tmp_path):
  source = tmp_path / "scene.tif"
  valid = make_scene(source, np.uint16, 4, 1234, "nodata", 0)
  model, params = zero_head_model(4)
  options = dict(scale=2, run=Run(model, params), values="0:10000", sampler="ddim", steps=3,
                 progress=False, tile=32, overlap=8)
  mean_path, std_path = upsample([source], tmp_path / "k3", samples=3, **options)
  assert std_path.name == "scene_x2_std.tif"
  with rasterio.open(mean_path) as mean, rasterio.open(std_path) as std:
    assert mean.dtypes[0] == "uint16" and std.dtypes[0] == "float32"
    assert (std.count, std.height, std.width, std.crs) == (4, 48, 40, mean.crs)
    assert std.transform == mean.transform and np.isnan(std.nodata)
    spread = std.read(masked=True)
    assert spread.min() >= 0 and spread.mean() > 1  # units of reflectance * 10000
    np.testing.assert_array_equal(spread.mask[0], mean.dataset_mask() == 0)
  assert not valid.all()
  _, std_path = upsample([source], tmp_path / "k1", samples=1, **options)
  with rasterio.open(std_path) as std:
    np.testing.assert_array_equal(std.read(masked=True).compressed(), 0)
