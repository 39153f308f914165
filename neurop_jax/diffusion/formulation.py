"""What the diffusion UNet predicts and in which space it diffuses: the formulation of stage 2.

A ``Formulation`` has two choices, both static (hashable, fixed at trace time):

- ``target``: what the network outputs at a noisy state x_t = sqrt(a) x0 + sqrt(1 - a) eps (a =
  alpha_bar = g^2, g the SR3 noise level): 'eps' (the noise, the paper), 'x0' (the clean
  sample) or 'v' (Salimans and Ho 2022: v = sqrt(a) eps - sqrt(1 - a) x0).
- ``space``: what is diffused: 'image' (the HR image in [-1, 1], the paper) or 'residual' (HR -
  prior, both in [-1, 1], times ``residual_scale``; the sample is prior + residual / scale).
  ``residual_scale`` matters because the residual is small (std about 0.1 against the image's
  0.5): unscaled, it is buried under the noise at all but the last few percent of the steps of
  the original schedule.

Every sampler works on ``(x0, eps)`` pairs; ``split_prediction`` turns a network output into one,
``regression_target`` is the training target. With a perfect network every target gives the same
pair, hence the same sampler update (tested to float32 precision). Arrays are NHWC; ``alpha_bar``
is a scalar or per-sample ``(B,)`` array, broadcast over the other axes.

Clipping: in 'image' space the final sample is clipped to [-1, 1] as in the original. In
'residual' space the residual is never clipped: the image prior + residual / scale is clipped to
[-1, 1] at the end. x0 estimates inside the sampler are not clipped in either space (the
original's DDIM does not clip).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

TARGETS = ("eps", "x0", "v")
SPACES = ("image", "residual")


@dataclasses.dataclass(frozen=True)
class Formulation:
  """The stage-2 formulation (static under jit): see the module docstring.

  Attributes:
    target: 'eps' (the paper), 'x0' or 'v'.
    space: 'image' (the paper) or 'residual'.
    residual_scale: the factor applied to HR - prior before diffusing it ('residual' only).
  """

  target: str = "eps"
  space: str = "image"
  residual_scale: float = 1.0

  def __post_init__(self):
    if self.target not in TARGETS:
      raise ValueError(f"unknown diffusion target {self.target!r}: choose one of {TARGETS} "
                       "(config.diffusion.target)")
    if self.space not in SPACES:
      raise ValueError(f"unknown diffusion space {self.space!r}: choose one of {SPACES} "
                       "(config.diffusion.space)")
    if not self.residual_scale > 0:
      raise ValueError(f"config.diffusion.residual_scale must be > 0, got {self.residual_scale}")

  @classmethod
  def from_config(cls, cfg) -> "Formulation":
    """The formulation of a diffusion config (fields ``target``, ``space``, ``residual_scale``).

    A config saved before these fields existed is the paper's formulation.
    """
    get = lambda name, default: cfg.get(name, default) if hasattr(cfg, "get") else default
    return cls(get("target", "eps"), get("space", "image"), float(get("residual_scale", 1.0)))

  def to_space(self, image: jax.Array, prior: jax.Array) -> jax.Array:
    """The clean sample x0 that is diffused, from an ``image`` and the ``prior`` in [-1, 1]."""
    if self.space == "image":
      return image
    return (image - prior) * self.residual_scale

  def image_of(self, x0: jax.Array, prior: jax.Array) -> jax.Array:
    """The image (the [-1, 1] scale, not clipped) that a sample ``x0`` of this space stands for."""
    if self.space == "image":
      return x0
    return prior + x0 / self.residual_scale

  def to_image(self, x0: jax.Array, prior: jax.Array) -> jax.Array:
    """The image in [-1, 1] (clipped) from a sample ``x0`` of this space and the prior."""
    return jnp.clip(self.image_of(x0, prior), -1, 1)


def _bcast(alpha_bar: jax.Array, like: jax.Array) -> jax.Array:
  a = jnp.asarray(alpha_bar, like.dtype)
  return jnp.reshape(a, a.shape + (1,) * (like.ndim - a.ndim))


def split_prediction(target: str, output: jax.Array, x_t: jax.Array,
                     alpha_bar: jax.Array) -> tuple[jax.Array, jax.Array]:
  """``(x0, eps)`` implied by the network ``output`` at ``x_t`` with alpha_bar ``alpha_bar``.

  'eps': x0 = (x_t - sqrt(1 - a) eps) / sqrt(a) (the original's DDIM arithmetic, unchanged);
  'x0': eps = (x_t - sqrt(a) x0) / sqrt(1 - a); 'v': x0 = sqrt(a) x_t - sqrt(1 - a) v and
  eps = sqrt(1 - a) x_t + sqrt(a) v. Needs 0 < a < 1 (every sampling step has it).
  """
  a = _bcast(alpha_bar, x_t)
  if target == "eps":
    return (x_t - output * jnp.sqrt(1 - a)) / jnp.sqrt(a), output
  if target == "x0":
    return output, (x_t - jnp.sqrt(a) * output) / jnp.sqrt(1 - a)
  if target == "v":
    return jnp.sqrt(a) * x_t - jnp.sqrt(1 - a) * output, jnp.sqrt(1 - a) * x_t + jnp.sqrt(a) * output
  raise ValueError(f"unknown diffusion target {target!r}: choose one of {TARGETS}")


def regression_target(target: str, x0: jax.Array, eps: jax.Array,
                      alpha_bar: jax.Array) -> jax.Array:
  """What the network should output for ``x_t = sqrt(a) x0 + sqrt(1 - a) eps``: eps, x0 or v."""
  if target == "eps":
    return eps
  if target == "x0":
    return x0
  if target == "v":
    a = _bcast(alpha_bar, x0)
    return jnp.sqrt(a) * eps - jnp.sqrt(1 - a) * x0
  raise ValueError(f"unknown diffusion target {target!r}: choose one of {TARGETS}")
