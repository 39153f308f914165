"""The forward diffusion process and the SR3 continuous-noise-level training objective.

A ``Schedule`` holds the discrete variance schedule of ``T`` steps: ``betas`` ``(T,)``, the float32
cumulative product ``alphas_cumprod`` (alpha_bar) ``(T,)`` and ``sqrt_alphas_cumprod_prev``
``(T+1,)`` = sqrt(concat([1], alpha_bar)), so index ``k`` holds sqrt(alpha_bar[k-1]). The network is
conditioned on the continuous noise level ``g = sqrt(alpha_bar)`` (a float per sample, never a step
index). Images are NHWC in the [-1, 1] scale.

The arithmetic follows the original NeurOp-Diff bit for bit: betas are built in float64 and cast to
float32; alpha_bar is the float32 cumulative product of the float32 ``1 - betas`` as PyTorch's CPU
``cumprod`` computes it (accumulated in float64, each output rounded to float32);
``sqrt_alphas_cumprod_prev`` is taken in float64 and stored as float32.
"""

from __future__ import annotations

import math
from typing import Callable

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np


@flax.struct.dataclass
class Schedule:
  """A discrete variance schedule of ``T`` steps, a pytree of float32 arrays.

  Attributes:
    betas: ``(T,)`` per-step variances in (0, 1).
    alphas_cumprod: ``(T,)`` alpha_bar[t] = prod_{s <= t} (1 - betas[s]), decreasing from ~1.
    sqrt_alphas_cumprod_prev: ``(T+1,)`` sqrt(concat([1], alpha_bar)); index ``t + 1`` is the noise
      level g of step ``t``, index 0 (= 1) the clean image.
  """

  betas: jax.Array
  alphas_cumprod: jax.Array
  sqrt_alphas_cumprod_prev: jax.Array

  @property
  def num_timesteps(self) -> int:
    """The number of steps ``T`` (static: read from the array shape)."""
    return self.betas.shape[0]


def _linear_betas(num_timesteps: int, beta_start: float, beta_end: float) -> np.ndarray:
  return np.linspace(beta_start, beta_end, num_timesteps, dtype=np.float64)


def _quad_betas(num_timesteps: int, beta_start: float, beta_end: float) -> np.ndarray:
  return np.linspace(beta_start**0.5, beta_end**0.5, num_timesteps, dtype=np.float64) ** 2


def _cosine_betas(num_timesteps: int, beta_start: float, beta_end: float) -> np.ndarray:
  """Nichol & Dhariwal (2021): alpha_bar(u) = cos((u + s) / (1 + s) * pi / 2)^2, s = 0.008.

  ``beta_start`` and ``beta_end`` are not used; betas are capped at 0.999.
  """
  del beta_start, beta_end
  s = 0.008
  u = np.arange(num_timesteps + 1, dtype=np.float64) / num_timesteps
  alpha_bar = np.cos((u + s) / (1 + s) * math.pi / 2) ** 2
  return np.minimum(1 - alpha_bar[1:] / alpha_bar[:-1], 0.999)


BETA_SCHEDULES: dict[str, Callable[[int, float, float], np.ndarray]] = {
    "linear": _linear_betas,
    "quad": _quad_betas,
    "cosine": _cosine_betas,
}


def make_schedule(name: str = "linear", num_timesteps: int = 2000, beta_start: float = 1e-6,
                  beta_end: float = 0.01) -> Schedule:
  """The schedule ``name`` ('linear', the original; 'quad'; 'cosine') of ``num_timesteps`` steps.

  Betas are computed in float64 and cast to float32; alpha_bar = cumprod(1 - betas) over the
  float32 factors, accumulated in float64 and rounded to float32 (PyTorch's CPU cumprod);
  sqrt_alphas_cumprod_prev = sqrt(concat([1], alpha_bar)) in float64, stored as float32.
  """
  if name not in BETA_SCHEDULES:
    raise ValueError(f"unknown schedule {name!r}: choose one of {tuple(BETA_SCHEDULES)}")
  betas = BETA_SCHEDULES[name](num_timesteps, beta_start, beta_end).astype(np.float32)
  alphas_cumprod = np.cumprod((np.float32(1) - betas).astype(np.float64)).astype(np.float32)
  g_prev = np.sqrt(np.concatenate([[1.0], alphas_cumprod.astype(np.float64)]))
  return Schedule(betas=jnp.asarray(betas), alphas_cumprod=jnp.asarray(alphas_cumprod),
                  sqrt_alphas_cumprod_prev=jnp.asarray(g_prev.astype(np.float32)))


def schedule_from_config(config: ml_collections.ConfigDict) -> Schedule:
  """The schedule described by a diffusion config (see ``neurop_jax.diffusion.config``)."""
  return make_schedule(config.schedule, config.num_timesteps, config.beta_start, config.beta_end)


def _per_sample(noise_level: jax.Array, ndim: int) -> jax.Array:
  """Reshape a ``(B,)`` array to ``(B, 1, ..., 1)`` with ``ndim`` axes in all."""
  return jnp.reshape(noise_level, noise_level.shape + (1,) * (ndim - noise_level.ndim))


def q_sample(x0: jax.Array, noise_level: jax.Array, eps: jax.Array) -> jax.Array:
  """The forward process x_t = g * x0 + sqrt(1 - g^2) * eps.

  Args:
    x0: ``(B, H, W, C)`` clean images in [-1, 1].
    noise_level: ``(B,)`` g = sqrt(alpha_bar) in (0, 1].
    eps: ``(B, H, W, C)`` standard normal noise.

  Returns:
    ``(B, H, W, C)`` the noisy images x_t.
  """
  g = _per_sample(noise_level, x0.ndim)
  return g * x0 + jnp.sqrt(1 - g * g) * eps


def sample_noise_level(rng: jax.Array, schedule: Schedule, batch: int,
                       per_sample: bool = False) -> jax.Array:
  """SR3's continuous noise level: ``(batch,)`` float32 g in (0, 1).

  A step t ~ randint(1, T) (high exclusive, as the original's randint(1, 2000)) is drawn once for
  the batch (the original) or, with ``per_sample``, once per sample; then per sample
  g ~ Uniform(g_prev[t-1], g_prev[t]), with g_prev = ``schedule.sqrt_alphas_cumprod_prev``.
  """
  t_shape = (batch,) if per_sample else ()
  t = jax.random.randint(jax.random.fold_in(rng, 0), t_shape, 1, schedule.num_timesteps)
  g_prev = schedule.sqrt_alphas_cumprod_prev
  u = jax.random.uniform(jax.random.fold_in(rng, 1), (batch,), jnp.float32)
  return g_prev[t - 1] + (g_prev[t] - g_prev[t - 1]) * u


def sample_training_inputs(rng: jax.Array, schedule: Schedule, x0: jax.Array,
                           per_sample: bool = False) -> tuple[jax.Array, jax.Array, jax.Array]:
  """The noisy inputs of one training step: ``(x_t, noise_level, eps)``.

  Args:
    rng: a PRNG key (fold in the step number before calling).
    schedule: the variance schedule.
    x0: ``(B, H, W, C)`` clean images in [-1, 1].
    per_sample: draw the step t per sample instead of once per batch.

  Returns:
    x_t ``(B, H, W, C)``, noise_level ``(B,)`` float32 and eps ``(B, H, W, C)``, the regression
    target of the noise predictor.
  """
  noise_level = sample_noise_level(jax.random.fold_in(rng, 0), schedule, x0.shape[0], per_sample)
  eps = jax.random.normal(jax.random.fold_in(rng, 1), x0.shape, x0.dtype)
  return q_sample(x0, noise_level, eps), noise_level, eps


LOSSES: dict[str, Callable[[jax.Array], jax.Array]] = {
    "l1": jnp.abs,
    "l2": jnp.square,
}


def diffusion_loss(pred: jax.Array, target: jax.Array, kind: str = "l1") -> jax.Array:
  """The regression loss, a scalar: mean |target - pred| ('l1') or its square ('l2').

  ``target`` is eps for the paper (see ``formulation.regression_target``).
  """
  if kind not in LOSSES:
    raise ValueError(f"unknown loss {kind!r}: choose one of {tuple(LOSSES)}")
  return jnp.mean(LOSSES[kind](target - pred))
