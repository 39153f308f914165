"""Tests of neurop_jax.data.pipelines: batch formats, determinism, resumable iterator state."""

import numpy as np
import pytest
from PIL import Image

from neurop_jax.data.config import default_data_config
from neurop_jax.data.degrade import eval_pair
from neurop_jax.data.pipelines import diffusion_pipeline, eval_batches, operator_pipeline
from neurop_jax.data.sources import ImageFolderSource
from neurop_jax.data.transforms import lr_sides


def _source(root, n=6, size=(40, 40), bad=(), skip=False):
  names = []
  for i in range(n):
    name = f"c{i % 2}/img{i}.png"
    (root / name).parent.mkdir(parents=True, exist_ok=True)
    if i in bad:
      (root / name).write_bytes(b"corrupt")
    else:
      pixels = np.random.default_rng(i).integers(0, 256, (*size, 3), dtype=np.uint8)
      Image.fromarray(pixels).save(root / name)
    names.append(name)
  return ImageFolderSource(root, names, skip_bad_images=skip)


def _config(**overrides):
  config = default_data_config()
  config.update(dict(patch_size=8, s_max=4.0, operator_batch_size=4, crop_size=32, lr_buckets=6,
                     diffusion_batch_size=4, read_threads=2, prefetch=4))
  config.update(overrides)
  return config


def _take(iterator, n):
  return [next(iterator) for _ in range(n)]


def _assert_same(batches_a, batches_b):
  assert len(batches_a) == len(batches_b)
  for a, b in zip(batches_a, batches_b):
    assert a.keys() == b.keys()
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])


def test_operator_batches_have_fixed_shapes_and_ranges(tmp_path):
  batches = _take(operator_pipeline(_source(tmp_path), _config()), 4)
  for batch in batches:
    assert {k: v.shape for k, v in batch.items()} == {
        "lr": (4, 8, 8, 3), "coord": (4, 8, 8, 2), "cell": (4, 2), "gt": (4, 8, 8, 3),
        "scale": (4,)}
    assert all(v.dtype == np.float32 for v in batch.values())
    for key in ("lr", "gt"):
      assert batch[key].min() >= 0 and batch[key].max() <= 1
    assert np.abs(batch["coord"]).max() < 1
    assert np.all((batch["scale"] > 1) & (batch["scale"] <= 4))
    np.testing.assert_allclose(batch["cell"], 2 / (8 * batch["scale"][:, None]).repeat(2, 1),
                               rtol=1e-6)
  assert len({float(s) for b in batches for s in b["scale"]}) > 4


def test_same_seed_same_batches_and_other_seed_other_batches(tmp_path):
  source = _source(tmp_path)
  _assert_same(_take(operator_pipeline(source, _config()), 3),
               _take(operator_pipeline(source, _config()), 3))
  other = _take(operator_pipeline(source, _config(), seed=1), 1)[0]
  assert not np.array_equal(other["lr"], _take(operator_pipeline(source, _config()), 1)[0]["lr"])


@pytest.mark.parametrize("make", [operator_pipeline, diffusion_pipeline])
def test_restored_state_continues_exactly_mid_epoch(tmp_path, make):
  source = _source(tmp_path, n=6)
  iterator = make(source, _config())
  _take(iterator, 2)
  state = iterator.get_state()
  expected = _take(iterator, 4)
  resumed = make(source, _config())
  resumed.set_state(state)
  _assert_same(_take(resumed, 4), expected)


def test_diffusion_batches_share_one_lr_size_per_batch(tmp_path):
  source = _source(tmp_path, n=5, size=(36, 31))
  batches = _take(diffusion_pipeline(source, _config()), 8)
  sides = set()
  for batch in batches:
    side = batch["lr"].shape[1]
    sides.add(side)
    assert batch["hr"].shape == (4, 32, 32, 3) and batch["lr"].shape == (4, side, side, 3)
    np.testing.assert_array_equal(batch["scale"], np.full(4, 32 / side, np.float32))
    assert batch["hr"].min() >= 0 and batch["hr"].max() <= 1
  assert sides <= set(lr_sides(32, 4.0, 6)) and len(sides) > 1


def test_eval_batches_are_whole_images_in_order(tmp_path):
  source = _source(tmp_path, n=3, size=(47, 50))
  batches = list(eval_batches(source, _config(), scale=3))
  assert [b["name"][0] for b in batches] == source.names
  for batch, index in zip(batches, range(3)):
    hr, lr = eval_pair(source[index]["image"], 3)
    np.testing.assert_array_equal(batch["hr"][0], hr)
    np.testing.assert_array_equal(batch["lr"][0], np.clip(lr, 0, 1))
    assert batch["hr"].shape == (1, 45, 48, 3) and batch["lr"].shape == (1, 15, 16, 3)


def test_bad_image_stops_the_pipeline_or_is_skipped(tmp_path):
  strict = _source(tmp_path / "strict", n=6, bad=(3,))
  with pytest.raises(ValueError, match="img3.png"):
    _take(operator_pipeline(strict, _config()), 3)
  lenient = _source(tmp_path / "lenient", n=6, bad=(3,), skip=True)
  with pytest.warns(UserWarning, match="img3.png"):
    batches = _take(operator_pipeline(lenient, _config()), 3)
  assert batches[-1]["lr"].shape == (4, 8, 8, 3)
  assert lenient.bad_images == ["c1/img3.png"]


def test_stage_two_batches_from_grain_workers_are_valid_and_repeat(tmp_path):
  """``workers=2``: the degradation runs in grain's worker processes (started from plain Python,
  where absl's flags are not parsed); the batches have the stage's shapes and ranges and repeat
  exactly for the same worker count. (The count is part of the data order: grain gives each
  worker its own slice of the stream, so workers=2 draws other batches than workers=0.)"""
  source = _source(tmp_path)
  first = _take(diffusion_pipeline(source, _config(workers=2)), 3)
  _assert_same(_take(diffusion_pipeline(source, _config(workers=2)), 3), first)
  for batch in first:
    assert batch["hr"].shape == (4, 32, 32, 3)
    side = batch["lr"].shape[1]
    assert batch["lr"].shape == (4, side, side, 3) and side in lr_sides(32, 4.0, 6)
    assert 0.0 <= batch["lr"].min() and batch["lr"].max() <= 1.0
