"""PSNR, SSIM and the protocols, against scikit-image as the independent reference."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from skimage.color import rgb2ycbcr
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from neurop_jax.evaluation import metrics


def _noisy_pair(seed: int, shape=(3, 40, 36, 3), noise=0.1) -> tuple[np.ndarray, np.ndarray]:
  """Random images in [0, 1] and a noisy copy, float32 ``shape``."""
  rng = np.random.default_rng(seed)
  a = rng.random(shape, dtype=np.float32)
  b = np.clip(a + noise * rng.standard_normal(shape, dtype=np.float32), 0, 1)
  return a, b


def _smooth_pair(seed: int, shape=(3, 48, 44, 3)) -> tuple[np.ndarray, np.ndarray]:
  """Smooth images (sinusoids, distinct per image) and a slightly noisy, brighter copy."""
  n, h, w, c = shape
  yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
  a = np.stack([
      np.stack([0.5 + 0.4 * np.sin(3 * xx + i + k) * np.cos(2 * yy - k) for i in range(c)], -1)
      for k in range(n)
  ])
  rng = np.random.default_rng(seed)
  b = np.clip(a + 0.004 + 0.01 * rng.standard_normal(shape), 0, 1)
  return a.astype(np.float32), b.astype(np.float32)


def _to_8bit(x: np.ndarray) -> np.ndarray:
  """The documented quantisation, round(255 x) in float32, as float64 for scikit-image."""
  return np.round(np.clip(x, 0, 1) * np.float32(255)).astype(np.float64)


def _ref_ssim(a: np.ndarray, b: np.ndarray, y_channel: bool = False, crop: int = 0) -> np.ndarray:
  """scikit-image SSIM of each pair under the paper's settings."""
  out = []
  for x, y in zip(a, b):
    x, y = _to_8bit(x), _to_8bit(y)
    if y_channel:
      x, y = rgb2ycbcr(x / 255)[..., :1], rgb2ycbcr(y / 255)[..., :1]
    if crop:
      x, y = x[crop:-crop, crop:-crop], y[crop:-crop, crop:-crop]
    out.append(structural_similarity(
        x, y, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255,
        channel_axis=-1,
    ))
  return np.array(out)


def _ref_psnr(a: np.ndarray, b: np.ndarray, y_channel: bool = False, crop: int = 0) -> np.ndarray:
  """scikit-image PSNR of each pair, on [0, 1] RGB or on the 8-bit-scale luma."""
  out = []
  for x, y in zip(a.astype(np.float64), b.astype(np.float64)):
    if crop:
      x, y = x[crop:-crop, crop:-crop], y[crop:-crop, crop:-crop]
    if y_channel:
      out.append(peak_signal_noise_ratio(rgb2ycbcr(x)[..., 0], rgb2ycbcr(y)[..., 0], data_range=255))
    else:
      out.append(peak_signal_noise_ratio(x, y, data_range=1))
  return np.array(out)


def test_psnr_identical_is_inf():
  a, _ = _noisy_pair(0)
  np.testing.assert_array_equal(metrics.psnr(a, a), np.inf)
  np.testing.assert_array_equal(metrics.psnr(a, a, y_channel=True, crop=2), np.inf)


def test_psnr_constant_offset_of_a_tenth_is_20_db():
  a = np.zeros((2, 16, 16, 3), np.float32)  # float32 sums of 768 squares: within 1e-4 dB
  np.testing.assert_allclose(metrics.psnr(a, a + 0.1), 20.0, atol=1e-4)
  rng = np.random.default_rng(1)
  a = 0.9 * rng.random((2, 16, 16, 3), dtype=np.float32)
  np.testing.assert_allclose(metrics.psnr(a, a + 0.1), 20.0, atol=1e-4)


@pytest.mark.parametrize("y_channel,crop", [(False, 0), (True, 0), (True, 3)])
def test_psnr_matches_skimage(y_channel, crop):
  a, b = _noisy_pair(2)
  got = metrics.psnr(a, b, y_channel=y_channel, crop=crop)
  np.testing.assert_allclose(got, _ref_psnr(a, b, y_channel, crop), atol=1e-4)


def test_rgb_to_y_known_values():
  rgb = np.array([[0, 0, 0], [1, 1, 1], [1, 0, 0], [0, 1, 0], [0, 0, 1]], np.float32)
  want = [16.0, 235.0, 81.481, 144.553, 40.966]
  np.testing.assert_allclose(metrics.rgb_to_y(rgb)[:, 0], want, atol=1e-4)
  a, _ = _noisy_pair(3)
  np.testing.assert_allclose(metrics.rgb_to_y(a), rgb2ycbcr(a)[..., :1], atol=1e-4)


@pytest.mark.parametrize("pair", [_noisy_pair, _smooth_pair])
@pytest.mark.parametrize("protocol", ["paper", "rs"])
def test_ssim_matches_skimage(pair, protocol):
  a, b = pair(4)
  p = metrics.PROTOCOLS[protocol]
  crop = p.crop(4.0)
  got = metrics.ssim(a, b, y_channel=p.y_channel, crop=crop)
  np.testing.assert_allclose(got, _ref_ssim(a, b, p.y_channel, crop), atol=1e-6)


def test_ssim_identical_is_one_and_opposite_is_negative():
  a, _ = _noisy_pair(5)
  np.testing.assert_allclose(metrics.ssim(a, a), 1.0, atol=1e-7)
  got = metrics.ssim(a, 1 - a)
  assert np.all(np.asarray(got) < -0.9)
  np.testing.assert_allclose(got, _ref_ssim(a, 1 - a), atol=1e-6)


@pytest.mark.parametrize("fn", [metrics.psnr, metrics.ssim])
def test_crop_equals_slicing(fn):
  a, b = _noisy_pair(6)
  b[:, :3] = a[:, :3]  # A border where the images agree: cropping it must change the result.
  c = 3
  got = fn(a, b, crop=c)
  np.testing.assert_allclose(got, fn(a[:, c:-c, c:-c], b[:, c:-c, c:-c]), rtol=1e-6)
  assert not np.allclose(got, fn(a, b))


@pytest.mark.parametrize("fn", [metrics.psnr, metrics.ssim])
@pytest.mark.parametrize("y_channel", [False, True])
def test_batched_equals_per_image(fn, y_channel):
  a, b = _noisy_pair(7)
  batched = fn(a, b, y_channel=y_channel, crop=2)
  single = [fn(a[i:i + 1], b[i:i + 1], y_channel=y_channel, crop=2)[0] for i in range(len(a))]
  np.testing.assert_allclose(batched, single, rtol=1e-6)


def test_under_jit():
  a, b = _smooth_pair(8)

  @jax.jit
  def both(x, y):
    return metrics.psnr(x, y, y_channel=True, crop=4), metrics.ssim(x, y, y_channel=True, crop=4)

  p, s = both(a, b)
  np.testing.assert_allclose(p, _ref_psnr(a, b, True, 4), atol=1e-4)
  np.testing.assert_allclose(s, _ref_ssim(a, b, True, 4), atol=1e-6)


def test_ssim_rejects_images_smaller_than_the_window():
  a = np.zeros((1, 14, 14, 3), np.float32)
  with pytest.raises(ValueError, match="11x11"):
    metrics.ssim(a, a, crop=2)


def test_protocol_crops():
  assert metrics.PROTOCOLS["paper"].crop(4.0) == 0
  assert [metrics.PROTOCOLS["rs"].crop(s) for s in (2, 2.5, 3.4, 4)] == [2, 3, 3, 4]


@pytest.mark.parametrize("name", ["paper", "rs"])
def test_compute_metrics_names_its_protocol(name):
  a, b = _noisy_pair(9)
  p = metrics.PROTOCOLS[name]
  out = metrics.compute_metrics(a, b, name, 3.0)
  assert out["protocol"] == name and set(out) == {"protocol", "psnr", "ssim"}
  crop = p.crop(3.0)
  np.testing.assert_allclose(out["psnr"], _ref_psnr(a, b, p.y_channel, crop), atol=1e-4)
  np.testing.assert_allclose(out["ssim"], _ref_ssim(a, b, p.y_channel, crop), atol=1e-6)
  assert metrics.compute_metrics(a, b, p, 3.0)["protocol"] == name


def test_compute_metrics_unknown_protocol():
  a, b = _noisy_pair(10)
  with pytest.raises(ValueError, match="unknown protocol"):
    metrics.compute_metrics(a, b, "div2k", 4.0)


def test_spectral_distance_sees_blur_and_grain():
  """0 for the HR itself; a blurred copy lacks high-frequency energy (negative bias), a copy with
  added noise has too much (positive), each at a distance of several dB."""
  from neurop_jax.evaluation.metrics import spectral_bias, spectral_distance
  rng = np.random.default_rng(0)
  y, x = np.mgrid[:64, :64] / 64
  hr = np.clip(0.5 + 0.2 * np.sin(40 * x * y)[..., None] + 0.05 * rng.standard_normal((64, 64, 3)),
               0, 1)
  blur = (hr + np.roll(hr, 1, 0) + np.roll(hr, 1, 1) + np.roll(hr, (1, 1), (0, 1))) / 4
  grain = np.clip(hr + 0.1 * rng.standard_normal(hr.shape), 0, 1)
  assert spectral_distance(hr, hr) == 0 and spectral_bias(hr, hr) == 0
  assert spectral_bias(blur, hr) < -3 and spectral_distance(blur, hr) > 3
  assert spectral_bias(grain, hr) > 3 and spectral_distance(grain, hr) > 3
