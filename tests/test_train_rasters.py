"""A model of four bands (red, green, blue, near-infrared) trained end to end on a folder of
synthetic uint16 reflectance GeoTIFF tiles, its value mapping saved with the checkpoints and used by
``python -m neurop_jax.upsample`` on a 4-band GeoTIFF without being given again."""

import numpy as np
import pytest

rasterio = pytest.importorskip("rasterio")

from conftest import load_config  # noqa: E402
from test_rasters import make_raster  # noqa: E402

from neurop_jax.cli.upsample import main  # noqa: E402
from neurop_jax.inference.run import load_run  # noqa: E402
from neurop_jax.training import loop as train  # noqa: E402


def reflectance_tile(seed, hw=(40, 40)):
  """``(4, h, w)`` uint16 reflectance * 10000: smooth fields, the near-infrared band brightest."""
  rng = np.random.default_rng(seed)
  y, x = np.mgrid[:hw[0], :hw[1]] / 10
  bands = [2000 + 1500 * np.sin(y * f + p) * np.cos(x * g)
           for f, g, p in rng.uniform(0.3, 1.5, (4, 3))]
  bands[3] = bands[3] + 4000
  return np.clip(np.stack(bands), 0, 10000).astype(np.uint16)


@pytest.mark.slow  # both stages of a 4-band model: about 1.5 min on a 2-core CPU
def test_four_band_model_trains_on_geotiff_tiles_and_upsamples_one(tmp_path, capsys):
  root = tmp_path / "tiles"
  for split, count in (("train", 6), ("val", 2)):
    (root / split).mkdir(parents=True)
    for i in range(count):
      make_raster(root / split / f"tile{i}.tif", reflectance_tile(10 * (split == "val") + i),
                  descriptions=["red", "green", "blue", "nir"])
  config = load_config("quickstart", "test")
  config.model.channels = 4
  config.data.update(source="folder", path=str(root), value_mapping="0:10000")
  workdir = tmp_path / "run"
  states = train.train_and_evaluate(config, workdir)
  assert set(states) == {"operator", "diffusion"}
  run = load_run(workdir)
  assert (run.value_mapping, run.channels, run.model_config.channels) == ("0:10000", 4, 4)

  scene = reflectance_tile(99, (24, 20))
  scene[:, :4, :4] = 0
  source = make_raster(tmp_path / "scene.tif", scene, nodata_value=0,
                       descriptions=["red", "green", "blue", "nir"])
  status = main([str(source), "--scale", "2", "--out", str(tmp_path / "out"), "--workdir",
                 str(workdir), "--samples", "2"])
  assert status == 0, capsys.readouterr().err
  with rasterio.open(tmp_path / "out" / "scene_x2.tif") as out:
    assert (out.count, out.dtypes[0], out.nodata, out.height, out.width) == (4, "uint16", 0, 48, 40)
    assert out.descriptions == ("red", "green", "blue", "nir")
    pixels = out.read(masked=True)
    assert pixels.mask[:, :8, :8].all() and not pixels.mask[:, 8:].any()
    assert 0 < pixels.mean() < 10000
  with rasterio.open(tmp_path / "out" / "scene_x2_std.tif") as std:
    assert std.count == 4 and std.read(masked=True).max() > 0
