"""Evaluation of a trained run: the files it writes, its numbers, bicubic against PIL, errors."""

from __future__ import annotations

import csv
import json
import math
import shutil

import jax
import numpy as np
import pytest
from PIL import Image

from conftest import load_config, load_fixture, no_transfers_or_compiles
from neurop_jax.evaluation import evaluate
from neurop_jax.data import sample_data_path
from neurop_jax.inference.api import image_key
from neurop_jax.inference.run import Run
from neurop_jax.models import make_model

SCALES = (2.5, 9.0)


def eval_config(**settings):
  """The quickstart test config with an ``evaluate`` block of the defaults and ``settings``."""
  config = load_config("quickstart", "test")
  config.evaluate = evaluate.default_evaluate_config()
  config.evaluate.update(settings)
  return config


@pytest.fixture(scope="module")
def evaluated(trained_workdir, tmp_path_factory):
  """``(workdir, report)``: a copy of the trained run evaluated on 1 image at 2.5 and 9."""
  workdir = tmp_path_factory.mktemp("evaluated") / "run"
  shutil.copytree(trained_workdir, workdir)
  config = eval_config(scales=SCALES, num_images=1, steps=2, crop_images=1, crop_size=48)
  return workdir, evaluate.evaluate(config, workdir)


def test_writes_tables_plot_and_crops(evaluated):
  workdir, report = evaluated
  out = workdir / "eval"
  for name in ("results.md", "results.csv", "results.json", "metrics_vs_scale.png",
               "crops_x2.5.png", "crops_x9.png"):
    assert (out / name).is_file(), name
  assert json.loads((out / "results.json").read_text()) == json.loads(json.dumps(report))
  with (out / "results.csv").open() as f:
    rows = list(csv.DictReader(f))
  assert [(float(r["scale"]), r["method"]) for r in rows] == [
      (s, m) for s in SCALES for m in evaluate.METHODS]
  markdown = (out / "results.md").read_text()
  assert "| x9 (OOD) | NeurOp-Diff |" in markdown and "| x2.5 | Bicubic |" in markdown
  with Image.open(out / "metrics_vs_scale.png") as plot:
    assert plot.size[0] > 400
  with Image.open(out / "crops_x9.png") as crops:  # bicubic | operator | NeurOp-Diff | HR
    assert crops.size == (4 * 48 + 3 * 2, 48)


def test_numbers_are_finite_and_in_range(evaluated):
  _, report = evaluated
  assert report["skipped"] == [] and report["num_images"] == 1
  for row in report["results"]:
    assert row["images"] == 1
    for metric in evaluate.METRICS:
      assert math.isfinite(row[metric]), (row, metric)
    assert -1 <= row["ssim_paper"] <= 1 and -1 <= row["ssim_rs"] <= 1 and row["lpips"] >= 0


def _pil_bicubic(image: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
  """PIL's float ('F') bicubic resize of each channel of ``(H, W, 3)``."""
  return np.stack([np.asarray(Image.fromarray(image[..., c]).resize(hw[::-1], Image.BICUBIC))
                   for c in range(3)], axis=-1)


def test_bicubic_psnr_equals_an_independent_computation(evaluated):
  _, report = evaluated
  with Image.open(sample_data_path() / report["names"][0]) as image:
    hr = np.asarray(image.convert("RGB"), np.float32) / 255.0
  for scale in SCALES:
    lr_hw = [round(n / scale) for n in hr.shape[:2]]
    lr_hw = [m - 1 if round(m * scale) > n else m for n, m in zip(hr.shape[:2], lr_hw)]
    crop = hr[:round(lr_hw[0] * scale), :round(lr_hw[1] * scale)]
    lr = np.clip(_pil_bicubic(crop, lr_hw), 0, 1)
    sr = np.clip(_pil_bicubic(lr, crop.shape[:2]), 0, 1).astype(np.float64)
    psnr = 10 * np.log10(1 / np.mean((sr - crop) ** 2))
    y = lambda x: 16 + x @ np.array([65.481, 128.553, 24.966])
    b = math.floor(scale + 0.5)
    psnr_y = 10 * np.log10(255**2 / np.mean((y(sr) - y(crop))[b:-b, b:-b] ** 2))
    row = next(r for r in report["results"] if r["scale"] == scale and r["method"] == "bicubic")
    assert row["psnr_paper"] == pytest.approx(psnr, abs=1e-3)
    assert row["psnr_rs"] == pytest.approx(psnr_y, abs=1e-3)


def test_operator_only_workdir_skips_neurop_diff(trained_workdir, tmp_path):
  workdir = tmp_path / "run"
  shutil.copytree(trained_workdir, workdir)
  shutil.rmtree(workdir / "diffusion")
  report = evaluate.evaluate(eval_config(scales=(3.0,), num_images=1, lpips=False, crop_images=0),
                             workdir)
  assert [r["method"] for r in report["results"]] == ["bicubic", "operator"]
  assert "no stage-2 checkpoint" in (workdir / "eval" / "results.md").read_text()
  assert not list((workdir / "eval").glob("crops_*.png"))


@pytest.mark.parametrize("scale", [1.0, 0.5, float("nan"), float("inf")])
def test_bad_scale_fails_before_loading(scale, tmp_path):
  with pytest.raises(ValueError, match="finite number > 1"):
    evaluate.evaluate(eval_config(scales=(4.0, scale)), tmp_path)


@pytest.mark.parametrize("settings, match", [
    (dict(methods=("bicubic", "esrgan")), "methods"),
    (dict(split="train"), "split"),
    (dict(sampler="euler"), "sampler"),
    (dict(strength=1.5), "strength must be in"),
    (dict(consistency=2), "consistency must be 1"),
    (dict(scales=()), "empty"),
])
def test_bad_settings_raise(settings, match, tmp_path):
  with pytest.raises(ValueError, match=match):
    evaluate.evaluate(eval_config(**settings), tmp_path)


def test_missing_checkpoint_raises(tmp_path):
  with pytest.raises(FileNotFoundError, match="checkpoint"):
    evaluate.evaluate(eval_config(), tmp_path)


def test_config_without_evaluate_block_uses_the_defaults():
  config = load_config("quickstart", "test")
  if "evaluate" in config:
    del config["evaluate"]
  settings = evaluate.evaluate_settings(config)
  assert settings.scales == (2.0, 3.1, 4.0, 5.8, 7.0, 8.0, 9.0, 10.0)
  assert tuple(settings.methods) == evaluate.METHODS


def test_evaluating_images_of_one_size_copies_explicitly_and_compiles_once():
  """``evaluate_image`` over several images of one size, after a warm-up: the inputs go to the
  device and the metrics come back explicitly, nothing else crosses, nothing compiles; the
  numbers are those of the same call outside the guard."""
  fx = load_fixture("micro")
  run = Run(make_model(fx.cfg), jax.device_put(fx.params))
  hrs = np.random.default_rng(0).uniform(size=(3, 1, 32, 32, 3)).astype(np.float32)
  lrs = hrs[:, :, ::4, ::4]
  sampling = run.sampling_for(sampler="ddim", steps=2)
  key = jax.random.key(0)
  rngs = [image_key(key, index) for index in range(3)]
  call = lambda i: evaluate.evaluate_image(run, lrs[i], hrs[i], 4.0, rngs[i],
                                           methods=["bicubic", "operator", "diffusion"],
                                           sampling=sampling, with_lpips=True)[1]
  first = call(0)
  with no_transfers_or_compiles():
    again = [call(i) for i in range(3)]
  assert again[0] == first
  assert {"psnr_paper", "ssim_rs", "lpips"} <= set(first["diffusion"])
