"""The five entry points on one trained run: the API, the tiled API, ``upsample()`` (and its
command), and ``--mode evaluate`` take their defaults from the ``Run`` and give the same output for
the same image, key, sampler and steps."""

from __future__ import annotations

import json
import shutil

import jax
import numpy as np
import pytest

from conftest import load_config
from neurop_jax.cli.upsampling import upsample
from neurop_jax.data import build_sources, eval_batches
from neurop_jax.data.sources import Subset, evenly_spaced
from neurop_jax.diffusion.formulation import Formulation
from neurop_jax.diffusion.samplers import Sampling
from neurop_jax.evaluation import evaluate
from neurop_jax.evaluation.metrics import PROTOCOLS, measure
from neurop_jax.inference.api import super_resolve
from neurop_jax.inference.run import PAPER_SAMPLING, Run, load_run
from neurop_jax.inference.tiled import super_resolve_tiled

SEED, SCALE = 7, 4.0


@pytest.fixture(scope="module")
def run(trained_workdir) -> Run:
  return load_run(trained_workdir)


@pytest.fixture(scope="module")
def first_test_image(trained_workdir):
  """``(lr (1, 64, 64, 3), hr (1, 256, 256, 3))``: the image ``--mode evaluate`` takes first at
  x4."""
  data = load_config("quickstart", "test").data
  source = build_sources(data)["test"]
  batch = next(iter(eval_batches(Subset(source, evenly_spaced(len(source), 1)), data, SCALE,
                                 batch_size=1)))
  return batch["lr"], batch["hr"]


def test_a_run_carries_what_it_trained_with(run, trained_workdir):
  """quickstart:test: x0-prediction of the residual scaled by 4, validated with DDIM 2 uniform
  with consistency; its stage-2 step of the lowest validation LPIPS."""
  assert run.formulation == Formulation("x0", "residual", 4.0)
  assert run.sampling == Sampling("ddim", 2, "uniform", consistency=True) != PAPER_SAMPLING
  records = [json.loads(line) for line in (trained_workdir / "diffusion" / "metrics.jsonl").open()]
  lpips = {r["step"]: r["lpips"] for r in records if r["kind"] == "val"}
  assert run.step == min(lpips, key=lpips.get) and run.has_unet and run.channels == 3
  assert all(isinstance(leaf, jax.Array) for leaf in jax.tree.leaves(run.params))
  assert Run(run.model, run.params).sampling == PAPER_SAMPLING  # without a run: the paper's


def test_the_api_samples_with_the_runs_defaults(run, first_test_image):
  lr, _ = first_test_image
  options = dict(scale=SCALE, rng=jax.random.key(1))
  default = np.asarray(super_resolve(run, lr, **options))
  np.testing.assert_array_equal(default, super_resolve(run, lr, sampler="ddim", steps=2,
                                                       skip="uniform", **options))
  paper = Run(run.model, run.params)  # the paper's formulation, eps on the image: another output
  assert np.abs(default - np.asarray(super_resolve(paper, lr, steps=2, **options))).mean() > 0.01


def test_upsample_evaluate_and_the_api_agree(run, trained_workdir, first_test_image, tmp_path):
  """One image, key and sampler (the run's DDIM 2) through three entry points: ``--mode evaluate``
  (image 0, seed 7), ``upsample(workdir=...)`` of the same LR as a float32 GeoTIFF (file 0, seed
  7) and ``super_resolve`` with the key both document, ``fold_in(key(7), 0)``."""
  from test_rasters import make_raster, rasterio  # skips without rasterio (the 'geo' extra)
  lr, hr = first_test_image
  hr_hw = hr.shape[1:3]
  api = np.asarray(super_resolve(run, lr, out_shape=hr_hw,
                                 rng=jax.random.fold_in(jax.random.key(SEED), 0)))
  tiled = super_resolve_tiled(run, lr, out_shape=hr_hw,
                              rng=jax.random.fold_in(jax.random.key(SEED), 0), progress=False)
  assert np.abs(tiled - api).max() < 1e-4  # the tiled prior sums k^T v in float64

  source = tmp_path / "lr.tif"
  make_raster(source, np.ascontiguousarray(lr[0].transpose(2, 0, 1)).astype(np.float32))
  [written] = upsample([source], tmp_path / "out", size=hr_hw, workdir=str(trained_workdir),
                       values="0:1", seed=SEED, progress=False)
  with rasterio.open(written) as out:
    upsampled = out.read().transpose(1, 2, 0)[None]
  assert np.abs(upsampled - api).max() < 1e-4

  workdir = tmp_path / "run"
  shutil.copytree(trained_workdir, workdir)
  config = load_config("quickstart", "test")
  config.evaluate.update(scales=(SCALE,), num_images=1, methods=("diffusion",), lpips=False,
                         crop_images=0, seed=SEED)
  config.evaluate.update(sampler="", steps=0, skip="", eta=-1.0)  # the run's
  report = evaluate.evaluate(config, workdir)
  assert report["sampling"] == dict(sampler="ddim", steps=2, skip="uniform", eta=0.0,
                                  strength=1.0, consistency=True)
  evaluated = {k: v[0] for k, v in report["per_image"]["x4"]["diffusion"].items()}
  for output in (api, upsampled):
    measured = measure(output, hr, SCALE, tuple(PROTOCOLS))
    assert measured == pytest.approx(evaluated, abs=2e-4), (measured, evaluated)
