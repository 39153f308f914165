"""``python -m neurop_jax.upsample`` end to end on tiny images with the micro model, and every bad
input answered by a clear message and no output file."""

import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from conftest import FIXTURE_DIRS, load_fixture
from neurop_jax.models.convert import read_state_dict
from neurop_jax.io.images import read_image, write_image
from neurop_jax.inference.api import prior_only
from neurop_jax.inference.run import Run
from neurop_jax.models import make_model
from neurop_jax.upsample import main

HW = (20, 24)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
  """The micro fixture as original-style .npz checkpoints: NeurOp-Diff (srno.*, Unet.*) and SRNO."""
  folder = tmp_path_factory.mktemp("checkpoints")
  srno = read_state_dict(FIXTURE_DIRS["micro"] / "srno_state.npz")
  unet = read_state_dict(FIXTURE_DIRS["micro"] / "unet_state.npz")
  np.savez(folder / "neurop_diff.npz", **{f"srno.{k}": v for k, v in srno.items()},
           **{f"Unet.{k}": v for k, v in unet.items()})
  np.savez(folder / "srno.npz", **srno)
  np.savez(folder / "unet.npz", **unet)
  return folder


@pytest.fixture
def png(tmp_path):
  path = tmp_path / "in" / "scene.png"
  write_image(path, np.random.default_rng(0).random((*HW, 3)))
  return path


def _run(args, checkpoints, capsys, checkpoint="neurop_diff.npz", preset="micro"):
  status = main([*map(str, args), "--checkpoint", str(checkpoints / checkpoint),
                 "--model-preset", preset, "--tile", "32", "--overlap", "8"])
  return status, capsys.readouterr()


def test_prior_only_png_jpeg_geotiff(tmp_path, png, checkpoints, capsys):
  from test_rasters import make_geotiff, rasterio  # skips without rasterio (the 'geo' extra)
  jpg = tmp_path / "in" / "photo.jpg"
  write_image(jpg, np.random.default_rng(1).random((*HW, 3)))
  geo = make_geotiff(tmp_path / "in" / "field.tif", hw=HW, pixel=0.5)
  out = tmp_path / "out"
  status, io = _run([png, jpg, geo, "--scale", "2", "--out", out, "--prior-only"], checkpoints,
                    capsys)
  assert status == 0, io.err
  names = ["scene_x2.png", "photo_x2.jpg", "field_x2.tif"]
  assert sorted(p.name for p in out.iterdir()) == sorted(names)
  run = Run(make_model(load_fixture("micro").cfg), load_fixture("micro").params)
  for name, source in zip(names, (png, jpg, geo)):
    result = read_image(out / name)
    assert result.shape == (2 * HW[0], 2 * HW[1], 3)
    if not name.endswith(".jpg"):  # the PNG and the GeoTIFF (read a window at a time)
      expected = prior_only(run, read_image(source)[None], scale=2)[0]
      assert np.abs(result - np.asarray(expected)).max() <= 1 / 255 + 1e-6
  with rasterio.open(geo) as src, rasterio.open(out / "field_x2.tif") as sr:
    assert sr.crs == src.crs
    np.testing.assert_allclose(sr.res, (0.25, 0.25))
    np.testing.assert_allclose(sr.bounds, src.bounds)


@pytest.mark.slow  # compiles a sampler: about 9 s
def test_diffusion_to_a_size_as_a_module(tmp_path, png, checkpoints):
  out = tmp_path / "out"
  command = [sys.executable, "-m", "neurop_jax.upsample", str(png), "--size", "40x50", "--out",
             str(out), "--checkpoint", str(checkpoints / "neurop_diff.npz"), "--model-preset",
             "micro", "--steps", "2", "--tile", "32", "--overlap", "8"]
  done = subprocess.run(command, capture_output=True, text=True, check=False)
  assert done.returncode == 0, done.stderr
  assert done.stdout.split() == [str(out / "scene_40x50.png")]
  result = read_image(out / "scene_40x50.png")
  assert result.shape == (40, 50, 3) and result.std() > 0


def test_training_workdir(tmp_path, png, trained_workdir, capsys):
  out = tmp_path / "out"
  status = main([str(png), "--scale", "2", "--out", str(out), "--workdir", str(trained_workdir),
                 "--tile", "32", "--overlap", "8"])
  err = capsys.readouterr().err
  assert status == 0, err
  assert "Given directory is read only" not in err
  assert "upsample (ddim, 2 steps)" in err  # the run's validation sampler (quickstart:test)
  assert read_image(out / "scene_x2.png").shape == (2 * HW[0], 2 * HW[1], 3)


def test_outputs_follow_the_umask_and_leave_no_partial_file(tmp_path, png, checkpoints, capsys):
  out = tmp_path / "out"
  previous = os.umask(0o022)
  try:
    status, io = _run([png, "--scale", "2", "--out", out, "--prior-only"], checkpoints, capsys)
  finally:
    os.umask(previous)
  assert status == 0, io.err
  assert [p.name for p in out.iterdir()] == ["scene_x2.png"]  # no .scene_x2.png.partial-*
  assert stat.S_IMODE((out / "scene_x2.png").stat().st_mode) == 0o644


@pytest.mark.slow  # a process of its own, stopped mid-write
def test_sigterm_during_a_geotiff_write_leaves_nothing(tmp_path, checkpoints):
  """SIGTERM (a scheduler's time limit) while the output GeoTIFF is being written: exit status
  143, and neither the output nor its ``.<name>.partial-*`` file is left in the folder."""
  rasterio = pytest.importorskip("rasterio")
  source = tmp_path / "scene.tif"
  pixels = np.random.default_rng(0).integers(0, 256, (3, 128, 128), dtype=np.uint8)
  with rasterio.open(source, "w", driver="GTiff", width=128, height=128, count=3,
                     dtype="uint8") as dst:
    dst.write(pixels)
  out = tmp_path / "out"
  process = subprocess.Popen(
      [sys.executable, "-m", "neurop_jax.upsample", str(source), "--scale", "16", "--out",
       str(out), "--checkpoint", str(checkpoints / "srno.npz"), "--model-preset", "micro",
       "--prior-only", "--tile", "64"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
      text=True)
  deadline = time.monotonic() + 300
  while not (out.is_dir() and any(".partial-" in p.name for p in out.iterdir())):
    assert process.poll() is None and time.monotonic() < deadline, process.communicate()[1]
    time.sleep(0.05)
  process.send_signal(signal.SIGTERM)
  _, err = process.communicate(timeout=120)
  assert process.returncode == 128 + signal.SIGTERM, err[-3000:]
  assert list(out.iterdir()) == []


def test_damaged_workdir_checkpoint_is_one_line(tmp_path, png, trained_workdir, capsys):
  workdir = tmp_path / "run"
  shutil.copytree(trained_workdir, workdir)
  step_dir = max((workdir / "diffusion" / "checkpoints").iterdir(), key=lambda p: int(p.name))
  (step_dir / "state" / "_METADATA").unlink()
  out = tmp_path / "out"
  status = main([str(png), "--scale", "2", "--out", str(out), "--workdir", str(workdir)])
  err = capsys.readouterr().err
  assert status == 1 and err.count("\n") == 1 and "Traceback" not in err, err
  assert re.search(rf"checkpoint step {step_dir.name} .* cannot be read .*move that step", err)
  assert not out.exists()


@pytest.mark.parametrize("case,message", [
    ("missing file", "does not exist"),
    ("unreadable image", "cannot read image"),
    ("scale too small", "out of range"),
    ("scale too large", "out of range"),
    ("size too small", "out of range"),
    ("bad size", "HEIGHTxWIDTH"),
    ("tiny image", "too small"),
    ("missing checkpoint", "checkpoint .* does not exist"),
    ("missing workdir", "no trained checkpoint"),
    ("operator-only checkpoint", "use --prior-only"),
    ("bad steps", "--steps must be"),
    ("same output name", "same output file"),
    ("out is a file", "--out .* is a file: give a folder"),
    ("out under a file", "cannot be created: .* is a file"),
    ("scale nan", "scale nan is out of range"),
    ("scale inf", "scale inf is out of range"),
    ("bare UNet checkpoint", "holds a UNet alone"),
    ("wrong preset", r"does not fit the configured model: missing \d+ \(.*, \.\.\.\)"),
    ("uint16 without a mapping", r"holds uint16 values: give .* --values LOW:HIGH"),
    ("values outside the mapping", r"lie outside the value mapping 0:255 .* give --values"),
    ("four bands for three", r"has 4 bands and the model reads 3: choose them with --bands"),
    ("bad value mapping", r"cannot read '0-10000' as LOW:HIGH"),
    ("samples with prior only", r"--samples 2: .* without --prior-only"),
    ("no tiles per batch", r"--tile_batch must be a positive number of tiles, got 0"),
])
def test_bad_input_is_a_message_and_writes_nothing(case, message, tmp_path, png, checkpoints,
                                                   capsys):
  out = tmp_path / "out"
  inputs, target, checkpoint, extra = [png], ["--scale", "2"], "neurop_diff.npz", []
  preset = "micro"
  if case == "missing file":
    inputs = [png, tmp_path / "nope.png"]
  elif case == "unreadable image":
    (tmp_path / "junk.png").write_bytes(b"not an image at all")
    inputs = [png, tmp_path / "junk.png"]
  elif case == "scale too small":
    target = ["--scale", "0.5"]
  elif case == "scale too large":
    target = ["--scale", "20"]
  elif case == "size too small":
    target = ["--size", "10x48"]
  elif case == "bad size":
    target = ["--size", "40by48"]
  elif case == "tiny image":
    write_image(tmp_path / "tiny.png", np.zeros((4, 30, 3)))
    inputs = [tmp_path / "tiny.png"]
  elif case == "missing checkpoint":
    checkpoint = "absent.npz"
  elif case == "operator-only checkpoint":
    checkpoint = "srno.npz"
  elif case == "bad steps":
    extra = ["--steps", "0"]
  elif case == "same output name":
    write_image(tmp_path / "other" / "scene.png", np.zeros((*HW, 3)))
    inputs = [png, tmp_path / "other" / "scene.png"]
  elif case == "out is a file":
    out.write_bytes(b"keep me")
  elif case == "out under a file":
    (tmp_path / "file").write_bytes(b"keep me")
    out = tmp_path / "file" / "out"
  elif case in ("scale nan", "scale inf"):
    target = ["--scale", case.split()[1]]
  elif case == "bare UNet checkpoint":
    checkpoint = "unet.npz"
  elif case == "wrong preset":
    preset = "small"
  elif case in ("uint16 without a mapping", "values outside the mapping", "bad value mapping"):
    from test_rasters import make_raster
    data = np.random.default_rng(0).integers(0, 10000, (3, *HW)).astype(np.uint16)
    inputs = [make_raster(tmp_path / "reflectance.tif", data)]
    extra = {"uint16 without a mapping": [], "values outside the mapping": ["--values", "0:255"],
             "bad value mapping": ["--values", "0-10000"]}[case]
  elif case == "four bands for three":
    from test_rasters import make_raster
    inputs = [make_raster(tmp_path / "rgbn.tif", np.ones((4, *HW), np.uint16))]
    extra = ["--values", "0:10000"]
  elif case == "samples with prior only":
    extra = ["--samples", "2", "--prior-only"]
  elif case == "no tiles per batch":
    extra = ["--tile_batch", "0"]
  if case == "missing workdir":
    status = main([str(png), "--scale", "2", "--out", str(out), "--workdir", str(tmp_path / "run")])
    err = capsys.readouterr().err
  else:
    status, io = _run([*inputs, *target, "--out", out, *extra], checkpoints, capsys, checkpoint,
                      preset)
    err = io.err
  assert status == 1
  assert err.startswith("error: ") and "Traceback" not in err and err.count("\n") == 1, err
  assert len(err) < 1000, err
  assert re.search(message, err), err
  if case == "out is a file":
    assert out.read_bytes() == b"keep me"
  else:
    assert not out.exists() or list(out.iterdir()) == []


def test_file_undecodable_when_read_leaves_no_partial_output(tmp_path, png, checkpoints, capsys):
  broken = tmp_path / "in" / "broken.png"
  Image.fromarray(np.full((*HW, 3), 128, np.uint8)).save(broken)
  broken.write_bytes(broken.read_bytes()[:60])  # the header opens, the pixels do not decode
  out = tmp_path / "out"
  status, io = _run([png, broken, "--scale", "2", "--out", out, "--prior-only"], checkpoints,
                    capsys)
  assert status == 1 and "broken.png" in io.err
  assert [p.name for p in out.iterdir()] == ["scene_x2.png"]


def test_geotiff_without_rasterio_names_the_extra(tmp_path, checkpoints, capsys, monkeypatch):
  from test_rasters import make_geotiff
  geo = make_geotiff(tmp_path / "field.tif")
  monkeypatch.setitem(sys.modules, "rasterio", None)
  status, io = _run([geo, "--scale", "2", "--out", tmp_path / "out", "--prior-only"], checkpoints,
                    capsys)
  assert status == 1 and "pip install 'neurop_jax[geo]'" in io.err
  assert not (tmp_path / "out").exists()
