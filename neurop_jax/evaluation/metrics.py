"""Image-quality metrics: PSNR, SSIM and LPIPS under named evaluation protocols.

Every function takes a batch of same-size images, NHWC float in [0, 1], and returns one value per
image, shape ``(B,)``. The functions are jitted; ``y_channel`` and ``crop`` are static.

Two protocols are in use (``PROTOCOLS``):

- ``'paper'``, what NeurOp-Diff reports: RGB, whole image, no border crop.
- ``'rs'``, what other remote-sensing SR papers report: the Y channel of ITU-R BT.601 (MATLAB's
  ``rgb2ycbcr``) with ``round(scale)`` pixels cropped at every border.

``compute_metrics`` returns the protocol's name beside its numbers, so that none is reported
without it.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from neurop_jax.data.degrade import downsample
from neurop_jax.evaluation import lpips

_SSIM_SIGMA = 1.5
_SSIM_RADIUS = 5
_SSIM_C1 = (0.01 * 255.0) ** 2
_SSIM_C2 = (0.03 * 255.0) ** 2


def rgb_to_y(x: jax.Array) -> jax.Array:
  """Luma of ITU-R BT.601 as MATLAB's ``rgb2ycbcr``, on the 8-bit scale.

  Args:
    x: RGB ``(..., 3)`` in [0, 1].

  Returns:
    ``(..., 1)`` float, ``Y = 16 + 65.481 R + 128.553 G + 24.966 B``, in [16, 235]; not rounded.
  """
  weights = jnp.array([65.481, 128.553, 24.966], dtype=x.dtype)
  return 16.0 + jnp.sum(x * weights, axis=-1, keepdims=True)


def _crop(x: jax.Array, crop: int) -> jax.Array:
  """Removes ``crop`` pixels at every border of NHWC ``x``."""
  if crop < 0:
    raise ValueError(f"crop must be >= 0, got {crop}")
  if crop == 0:
    return x
  return x[:, crop:-crop, crop:-crop, :]


@functools.partial(jax.jit, static_argnames=("y_channel", "crop"))
def psnr(a: jax.Array, b: jax.Array, *, y_channel: bool = False, crop: int = 0) -> jax.Array:
  """Peak signal-to-noise ratio in dB, per image.

  RGB: ``10 log10(1 / MSE)`` over all pixels and channels of the [0, 1] images (data range 1).
  ``y_channel``: ``10 log10(255^2 / MSE)`` of the luma ``rgb_to_y`` on its 8-bit scale (data range
  255, as SR papers compute it). Inputs are used as given, not quantised to 8 bits.

  Args:
    a, b: ``(B, H, W, 3)`` in [0, 1].
    y_channel: compare the BT.601 luma instead of RGB.
    crop: pixels removed at every border first.

  Returns:
    ``(B,)`` float32; ``+inf`` for identical images.
  """
  a, b = _crop(a, crop), _crop(b, crop)
  peak = 1.0
  if y_channel:
    a, b, peak = rgb_to_y(a), rgb_to_y(b), 255.0
  mse = jnp.mean(jnp.square(a.astype(jnp.float32) - b.astype(jnp.float32)), axis=(1, 2, 3))
  return 10.0 * jnp.log10(peak**2 / mse)


def _gaussian_window() -> np.ndarray:
  """The normalised 1-D Gaussian of SSIM: 11 taps, sigma 1.5, float32 ``(11,)``."""
  x = np.arange(-_SSIM_RADIUS, _SSIM_RADIUS + 1, dtype=np.float64)
  w = np.exp(-0.5 * (x / _SSIM_SIGMA) ** 2)
  return (w / w.sum()).astype(np.float32)


def _filter_valid(x: jax.Array) -> jax.Array:
  """Separable 11x11 Gaussian of NHWC ``x`` on the valid region: ``(B, H - 10, W - 10, C)``.

  Written as sums of shifted slices, so it runs in exact float32 on every backend (no reduced
  precision convolutions).
  """
  w = _gaussian_window()
  n = 2 * _SSIM_RADIUS
  h, wd = x.shape[1] - n, x.shape[2] - n
  x = sum(float(w[k]) * x[:, k:k + h] for k in range(n + 1))
  return sum(float(w[k]) * x[:, :, k:k + wd] for k in range(n + 1))


@functools.partial(jax.jit, static_argnames=("y_channel", "crop"))
def ssim(a: jax.Array, b: jax.Array, *, y_channel: bool = False, crop: int = 0) -> jax.Array:
  """Structural similarity per image, the protocol of the paper.

  The images are clipped to [0, 1] and quantised to 8 bits (``round(255 x)`` in float32, halves to
  even); ``y_channel`` then takes the (unrounded) luma ``rgb_to_y`` of those. SSIM uses an 11x11 Gaussian window (sigma 1.5),
  ``C1 = (0.01 * 255)^2``, ``C2 = (0.03 * 255)^2`` and population (co)variances, per channel, on the
  valid region of the filter (5 pixels lost at each border), averaged over channels and pixels.
  This equals ``skimage.metrics.structural_similarity(a8, b8, gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False, data_range=255, channel_axis=-1)``.

  Args:
    a, b: ``(B, H, W, 3)`` in [0, 1]; after ``crop``, H and W must be at least 11.
    y_channel: compare the BT.601 luma instead of RGB.
    crop: pixels removed at every border first.

  Returns:
    ``(B,)`` float32 in [-1, 1]; 1 for identical images.
  """
  a, b = _crop(a, crop), _crop(b, crop)
  if min(a.shape[1:3]) < 2 * _SSIM_RADIUS + 1:
    raise ValueError(f"SSIM needs images of at least 11x11 pixels, got {a.shape[1:3]}")
  a = jnp.round(jnp.clip(a.astype(jnp.float32), 0.0, 1.0) * 255.0)
  b = jnp.round(jnp.clip(b.astype(jnp.float32), 0.0, 1.0) * 255.0)
  if y_channel:
    a, b = rgb_to_y(a / 255.0), rgb_to_y(b / 255.0)
  # SSIM = l * cs with l = 1 - mu_d^2 / (mu_a^2 + mu_b^2 + C1), cs = 1 - var_d / (var_a + var_b + C2),
  # d = a - b: the usual (2 mu_a mu_b + C1)(2 cov + C2) / ((mu_a^2 + mu_b^2 + C1)(var_a + var_b + C2))
  # rewritten so that float32 stays accurate near SSIM = 1. (Co)variances are shift invariant, so
  # they are taken of images centred on their per-channel means.
  d = a - b
  ac = a - jnp.mean(a, axis=(1, 2), keepdims=True)
  bc = b - jnp.mean(b, axis=(1, 2), keepdims=True)
  moments = jnp.concatenate([a, b, d, ac, bc, ac * ac + bc * bc, d * d], axis=-1)
  mu_a, mu_b, mu_d, ca, cb, sq_sum, sq_d = jnp.split(_filter_valid(moments), 7, axis=-1)
  var_sum = sq_sum - ca * ca - cb * cb
  var_d = sq_d - mu_d * mu_d
  lum = 1.0 - mu_d * mu_d / (mu_a * mu_a + mu_b * mu_b + _SSIM_C1)
  cs = 1.0 - var_d / (var_sum + _SSIM_C2)
  return jnp.mean(lum * cs, axis=(1, 2, 3))


@dataclasses.dataclass(frozen=True)
class Protocol:
  """How a number was measured.

  Attributes:
    name: the name reported beside every number.
    y_channel: PSNR and SSIM on the BT.601 luma instead of RGB.
    crop_scale: crop ``round(scale)`` pixels at every border (halves rounded up: 2.5 -> 3).
  """

  name: str
  y_channel: bool
  crop_scale: bool

  def crop(self, scale: float) -> int:
    """Border pixels removed at super-resolution factor ``scale``."""
    return math.floor(scale + 0.5) if self.crop_scale else 0


PROTOCOLS: dict[str, Protocol] = {
    "paper": Protocol("paper", y_channel=False, crop_scale=False),
    "rs": Protocol("rs", y_channel=True, crop_scale=True),
}


def compute_metrics(
    sr: jax.Array,
    hr: jax.Array,
    protocol: str | Protocol,
    scale: float,
    *,
    with_lpips: bool = False,
) -> dict[str, str | jax.Array]:
  """PSNR, SSIM and optionally LPIPS of a batch under one protocol.

  LPIPS is always on RGB (it is defined there), over the same cropped region as the others.

  Args:
    sr: super-resolved ``(B, H, W, 3)`` in [0, 1].
    hr: ground truth, same shape, in [0, 1].
    protocol: a ``Protocol`` or a name in ``PROTOCOLS`` ('paper' or 'rs').
    scale: the super-resolution factor (sets the crop of protocol 'rs').
    with_lpips: also compute LPIPS (AlexNet, v0.1); needs ``pip install neurop_jax[lpips]``.

  Returns:
    ``{'protocol': name, 'psnr': (B,), 'ssim': (B,)}``, plus ``'lpips': (B,)`` if requested.
  """
  if isinstance(protocol, str):
    if protocol not in PROTOCOLS:
      raise ValueError(f"unknown protocol {protocol!r}; choose one of {sorted(PROTOCOLS)}")
    protocol = PROTOCOLS[protocol]
  crop = protocol.crop(scale)
  out: dict[str, str | jax.Array] = {
      "protocol": protocol.name,
      "psnr": psnr(sr, hr, y_channel=protocol.y_channel, crop=crop),
      "ssim": ssim(sr, hr, y_channel=protocol.y_channel, crop=crop),
  }
  if with_lpips:
    out["lpips"] = lpips.lpips(_crop(sr, crop), _crop(hr, crop))
  return out


def measure(sr: jax.Array | np.ndarray, hr: jax.Array | np.ndarray, scale: float,
            protocols: tuple[str, ...] = ("paper",), with_lpips: bool = False) -> dict[str, float]:
  """The metrics of one image pair ``(1, H, W, 3)`` in [0, 1], as Python floats.

  ``{'psnr_<protocol>', 'ssim_<protocol>'}`` for each of ``protocols`` and, if asked, ``'lpips'``
  (RGB, whole image: measured with the 'paper' protocol, which crops nothing). Computed where
  the arrays are (device arrays stay there); the scalars are copied back explicitly.
  """
  values = {}
  for name in dict.fromkeys(protocols + (("paper",) if with_lpips else ())):
    m = jax.device_get(compute_metrics(sr, hr, name, scale,
                                       with_lpips=with_lpips and name == "paper"))
    if name in protocols:
      values[f"psnr_{name}"] = float(m["psnr"][0])
      values[f"ssim_{name}"] = float(m["ssim"][0])
    if "lpips" in m:
      values["lpips"] = float(m["lpips"][0])
  return values


def bicubic(lr: np.ndarray, hr_hw: tuple[int, int]) -> np.ndarray:
  """The bicubic baseline: PIL-exact bicubic upsampling of ``(..., h, w, C)`` to ``(..., H, W,
  C)``, float32 in [0, 1] (clipped)."""
  return np.clip(downsample(lr, hr_hw), 0.0, 1.0)


def radial_power(image: np.ndarray, bins: int = 32) -> np.ndarray:
  """The radially averaged power spectrum of the Y channel (BT.601) of ``(H, W, 3)`` in [0, 1]:
  ``(bins,)`` mean |FFT|^2 / (H W) over rings of equal width in normalised frequency radius
  (0 to the Nyquist frequency 0.5; the corners beyond it are left out), mean removed first."""
  y = np.asarray(rgb_to_y(jnp.asarray(image, jnp.float32)), np.float64)[..., 0] / 255.0
  y = y - y.mean()
  power = np.abs(np.fft.fft2(y)) ** 2 / y.size
  fy = np.fft.fftfreq(y.shape[0])[:, None]
  fx = np.fft.fftfreq(y.shape[1])[None, :]
  radius = np.sqrt(fy ** 2 + fx ** 2)
  ring = np.minimum((radius / 0.5 * bins).astype(int), bins)
  sums = np.bincount(ring.ravel(), power.ravel(), bins + 1)[:bins]
  counts = np.bincount(ring.ravel(), minlength=bins + 1)[:bins]
  return sums / np.maximum(counts, 1)


def spectral_distance(sr: np.ndarray, hr: np.ndarray, bins: int = 32,
                      band: tuple[float, float] = (0.25, 1.0)) -> float:
  """A high-frequency fidelity measure that no training here optimises: the mean absolute
  difference, in decibels, of the radially averaged power spectra (``radial_power``) of ``sr``
  and ``hr`` ``(H, W, 3)`` in [0, 1] over the rings in ``band`` (fractions of the Nyquist
  frequency: the upper three quarters by default). 0 is the HR's spectrum; a blurry output lies
  below it (too little energy), a grainy one above (too much) at the highest frequencies."""
  p_sr, p_hr = radial_power(sr, bins), radial_power(hr, bins)
  lo, hi = int(band[0] * bins), int(band[1] * bins)
  floor = 1e-12
  return float(np.mean(np.abs(10 * np.log10((p_sr[lo:hi] + floor) / (p_hr[lo:hi] + floor)))))


def spectral_bias(sr: np.ndarray, hr: np.ndarray, bins: int = 32,
                  band: tuple[float, float] = (0.5, 1.0)) -> float:
  """The signed energy ratio of the top frequency band, in decibels: 10 log10 of ``sr``'s power
  over ``hr``'s summed over the rings in ``band`` (the upper half by default); < 0 blurrier than
  the HR, > 0 more high-frequency energy (grain or detail) than it."""
  p_sr, p_hr = radial_power(sr, bins), radial_power(hr, bins)
  lo, hi = int(band[0] * bins), int(band[1] * bins)
  return float(10 * np.log10((p_sr[lo:hi].sum() + 1e-12) / (p_hr[lo:hi].sum() + 1e-12)))
