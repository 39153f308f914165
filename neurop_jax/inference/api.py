"""Super-resolution from other JAX code: the prior once, then one compiled reverse-diffusion scan.

Images at this boundary are NHWC float32 in [0, 1]: ``lr`` ``(B, h, w, C)`` in, ``(B, H, W, C)``
out, with ``(H, W)`` given as ``out_shape`` or as ``scale`` (``(round(h * scale), round(w *
scale))``, computed in Python from the static shape). Inside, the model works in [-1, 1]::

  model = make_model(model_config("paper"))
  hr = super_resolve(model, params, lr, scale=4, rng=jax.random.key(0))  # (B, 4h, 4w, C)

``super_resolve`` validates its arguments in Python and calls one jitted pure function (static:
the model, the output shape, the sampler and the timestep sequence, i.e. ``steps`` and ``skip``);
it works inside the caller's ``jit`` and under ``vmap`` (e.g. over rng keys for several samples of
one image). ``make_super_resolver`` fixes the shapes and options once and returns a function
``(params, lr, rng) -> images`` that reuses the compiled program.

What compiles a new program (JAX's jit cache, shared by ``super_resolve`` and every resolver
built with the same options): a new model (another config or dtype), a new output shape, sampler,
``steps``, ``skip`` or schedule values that change the timestep sequence; a new ``lr`` shape (batch
size included); parameters of other shapes or dtypes (e.g. cast to bfloat16). Not a recompile: new
parameter values, new images of the same shape, a new rng, a new ``eta``, a schedule with other
values but the same sequence, ``lr`` of another float dtype (cast to float32 before the call),
raw uint32 keys vs typed keys (both are passed on as typed keys).

Sampling follows the paper: x_T ~ N(0, 1) of the HR shape from ``fold_in(rng, 0)``, the sampler's
own randomness from ``fold_in(rng, 1)``; the final [-1, 1] sample is clipped and mapped to [0, 1].
"""

from __future__ import annotations

import functools
import math
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from neurop_jax.models.coords import make_cell, make_coord
from neurop_jax.diffusion.schedule import Schedule, make_schedule
from neurop_jax.models import NeurOpDiff
from neurop_jax.diffusion.formulation import Formulation
from neurop_jax.diffusion.samplers import SAMPLERS, NetFn, Trajectory, sample, timestep_sequence

DEFAULT_SKIP: dict[str, str] = {"ddim": "uniform", "ddpm": "uniform", "dpm_solver_pp": "logsnr"}

RANGE_TOLERANCE = 0.1
"""How far outside [0, 1] concrete ``lr`` values may lie: bicubic downsampling (as
``neurop_jax.data.degrade`` and PIL do it) overshoots slightly and the model was trained on such
inputs; anything further (uint8 in 0..255, [-1, 1] images) is an error."""

MAX_OUTPUT_PIXELS = 2048 * 2048
"""The largest output ``B * H * W`` the untiled API accepts (a 512x512 image at x4). The prior's
Galerkin attention holds several width-256 float32 feature maps of the output size at once, over
2 KB per output pixel (a 3200x3200 output exhausted 20 GB), and the UNet more: beyond this bound
a machine's memory, not the model, decides whether a call survives. Larger outputs go through
``neurop_jax.tiled.super_resolve_tiled`` (or ``python -m neurop_jax.upsample``), whose memory
depends on the tile, not the scene."""

Resolver = Callable[[dict, jax.Array, jax.Array], jax.Array]


@functools.lru_cache(maxsize=None)
def default_schedule() -> Schedule:
  """The original's linear schedule: 2000 steps, betas from 1e-6 to 0.01."""
  return make_schedule()


def output_size(lr_shape: Sequence[int], *, scale: float | None = None,
                out_shape: Sequence[int] | None = None) -> tuple[int, int]:
  """The HR size ``(H, W)`` for an ``lr`` of shape ``(B, h, w, C)`` and exactly one of the two.

  ``scale`` gives ``(round(h * scale), round(w * scale))``; ``out_shape`` is ``(H, W)`` itself.
  Raises ValueError when both or neither are given, when ``scale`` is not a finite number > 0
  or when the output is smaller than the input.
  """
  if (scale is None) == (out_shape is None):
    raise ValueError("give exactly one of scale (e.g. scale=4) and out_shape (e.g. out_shape=(256, "
                     f"256)); got scale={scale!r}, out_shape={out_shape!r}")
  h, w = lr_shape[1], lr_shape[2]
  if scale is not None:
    if isinstance(scale, bool) or not isinstance(scale, (int, float, np.number)):
      raise ValueError(f"scale must be a Python number (it fixes the output shape), got {scale!r}")
    if not math.isfinite(scale) or scale <= 0:
      raise ValueError(f"scale must be a finite number > 0, got {scale}")
    out_shape = (round(h * scale), round(w * scale))
  if len(out_shape) != 2:
    raise ValueError(f"out_shape must be (H, W), got {out_shape!r}")
  out_h, out_w = int(out_shape[0]), int(out_shape[1])
  if out_h < h or out_w < w:
    raise ValueError(f"output {out_h}x{out_w} is smaller than the input {h}x{w}: NeurOp-Diff "
                     "upsamples; use scale >= 1 or an out_shape at least the input's size")
  return out_h, out_w


def untiled_output_size(lr_shape: Sequence[int], *, scale: float | None = None,
                        out_shape: Sequence[int] | None = None) -> tuple[int, int]:
  """``output_size``, also refusing outputs of more than ``MAX_OUTPUT_PIXELS`` (ValueError)."""
  out_h, out_w = output_size(lr_shape, scale=scale, out_shape=out_shape)
  if lr_shape[0] * out_h * out_w > MAX_OUTPUT_PIXELS:
    raise ValueError(f"output {lr_shape[0]} x {out_h}x{out_w} exceeds MAX_OUTPUT_PIXELS "
                     f"({MAX_OUTPUT_PIXELS}) of the untiled API: use neurop_jax.tiled."
                     "super_resolve_tiled (bounded memory), a smaller scale or a smaller batch")
  return out_h, out_w


def check_layout(lr_shape: Sequence[int], dtype: jnp.dtype, channels: int = 3) -> None:
  """Raise ValueError unless ``lr_shape`` is NHWC ``(B, h, w, channels)`` and ``dtype`` a float."""
  if len(lr_shape) != 4:
    hint = " (a single HWC image: pass lr[None])" if len(lr_shape) == 3 else ""
    raise ValueError(f"lr has shape {tuple(lr_shape)}: expected NHWC (B, h, w, {channels}){hint}")
  if lr_shape[-1] != channels:
    if lr_shape[1] == channels:
      raise ValueError(f"lr has shape {tuple(lr_shape)}, which looks like NCHW: images are NHWC "
                       f"(B, h, w, {channels}); transpose with lr.transpose(0, 2, 3, 1)")
    what = ("(RGB): convert grayscale or RGBA images to RGB first" if channels == 3 else
            "(the model's bands)")
    raise ValueError(f"lr has {lr_shape[-1]} channels, expected {channels} {what}")
  if not jnp.issubdtype(dtype, jnp.floating):
    raise ValueError(f"lr has dtype {dtype}: images must be floats in [0, 1]; divide uint8 by 255")


def check_images(lr: jax.Array | np.ndarray, channels: int = 3) -> None:
  """Raise ValueError unless ``lr`` is a float NHWC batch ``(B, h, w, channels)`` in [0, 1].

  The values (finite, in range) are checked only on concrete arrays (not under jit or vmap
  tracing), with ``RANGE_TOLERANCE`` for bicubic overshoot; checking them waits for the array to
  be computed.
  """
  check_layout(lr.shape, lr.dtype, channels)
  if isinstance(lr, jax.core.Tracer):
    return
  values = np.asarray(lr)
  finite = np.isfinite(values)
  if not finite.all():
    raise ValueError(f"lr holds {int(values.size - finite.sum())} NaN or infinite values: fill "
                     "them (e.g. with np.nan_to_num or the image's mean) before super-resolving")
  lo, hi = float(values.min()), float(values.max())
  if lo < -RANGE_TOLERANCE or hi > 1 + RANGE_TOLERANCE:
    raise ValueError(f"lr values span [{lo:.3g}, {hi:.3g}]: images must be in [0, 1]; divide uint8 "
                     "by 255, map [-1, 1] images with (x + 1) / 2")


def _typed_key(rng: jax.Array) -> jax.Array:
  """A typed PRNG key from a typed key or a raw uint32 one (``jax.random.PRNGKey``)."""
  if jnp.issubdtype(rng.dtype, jax.dtypes.prng_key):
    return rng
  return jax.random.wrap_key_data(rng)


def compute_prior(model: NeurOpDiff, params: dict, lr: jax.Array,
                  out_shape: tuple[int, int]) -> jax.Array:
  """The operator's prior of ``lr`` ``(B, h, w, C)`` in [0, 1]: ``(B, H, W, C)`` in [-1, 1] scale.

  Not clipped (the diffusion UNet is conditioned on the unclipped prior). Pure; jit it with
  ``model`` and ``out_shape`` static.
  """
  batch = lr.shape[0]
  coord = jnp.broadcast_to(jnp.asarray(make_coord(out_shape)), (batch, *out_shape, 2))
  cell = jnp.broadcast_to(jnp.asarray(make_cell(out_shape)), (batch, 2))
  return model.apply(params, lr.astype(jnp.float32) * 2 - 1, coord, cell, method=model.prior)


def sample_conditioned(net_fn: NetFn, prior: jax.Array, x_T: jax.Array, rng: jax.Array, *,
                       schedule: Schedule, formulation: Formulation = Formulation(),
                       sampler: str = "ddim", steps: int = 50, eta: jax.Array | float = 0.0,
                       skip: str = "uniform", timesteps: Sequence[int] | None = None,
                       return_trajectory: bool = False
                       ) -> jax.Array | tuple[jax.Array, Trajectory]:
  """Reverse diffusion of any conditioned network in ``formulation``'s space, as an image.

  ``net_fn(x_t, g)`` is the network closed over its parameters and ``prior`` ``(B, H, W, C)``
  (the [-1, 1] scale); ``x_T`` ``(B, H, W, C)`` standard normal. The sampler runs in the
  formulation's space (image or scaled residual) with its target; the result is
  ``formulation.to_image``: ``(B, H, W, C)`` in [-1, 1], clipped. A trajectory, if asked, is in
  the diffusion space.
  """
  out = sample(net_fn, x_T, rng, schedule=schedule, sampler=sampler, steps=steps, eta=eta,
               skip=skip, timesteps=timesteps, target=formulation.target,
               clip=formulation.space == "image", return_trajectory=return_trajectory)
  if return_trajectory:
    return formulation.to_image(out[0], prior), out[1]
  return formulation.to_image(out, prior)


def sample_given_prior(model: NeurOpDiff, params: dict, prior: jax.Array, x_T: jax.Array,
                       rng: jax.Array, *, schedule: Schedule,
                       formulation: Formulation = Formulation(), sampler: str = "ddim",
                       steps: int = 50, eta: jax.Array | float = 0.0, skip: str = "uniform",
                       timesteps: Sequence[int] | None = None, return_trajectory: bool = False
                       ) -> jax.Array | tuple[jax.Array, Trajectory]:
  """Reverse diffusion from ``x_T`` conditioned on a precomputed ``prior``: one ``lax.scan``.

  Args:
    model: the NeurOp-Diff module (its ``denoise`` is the network).
    params: ``{'params': {'operator': ..., 'unet': ...}}`` (only the UNet's are read).
    prior: ``(B, H, W, C)`` the operator's image in the [-1, 1] scale (``compute_prior``).
    x_T: ``(B, H, W, C)`` standard normal start noise.
    rng: a PRNG key for the stochastic samplers.
    formulation: what the UNet predicts and in which space it diffuses (the paper: eps, image).
    schedule, sampler, steps, eta, skip, timesteps, return_trajectory: as ``samplers.sample``.

  Returns:
    ``(B, H, W, C)`` the image in [-1, 1] (clipped), and the ``Trajectory`` if asked.
  """
  net_fn = lambda x, g: model.apply(params, x, g, prior, method=model.denoise)
  return sample_conditioned(net_fn, prior, x_T, rng, schedule=schedule, formulation=formulation,
                            sampler=sampler, steps=steps, eta=eta, skip=skip, timesteps=timesteps,
                            return_trajectory=return_trajectory)


def _to_unit(x: jax.Array) -> jax.Array:
  """[-1, 1] -> [0, 1], float32."""
  return ((x.astype(jnp.float32) + 1) / 2).clip(0, 1)


@functools.partial(jax.jit, static_argnames=("model", "out_shape", "sampler", "timesteps",
                                             "formulation"))
def _super_resolve(model: NeurOpDiff, params: dict, lr: jax.Array, rng: jax.Array,
                   eta: jax.Array, schedule: Schedule, *, out_shape: tuple[int, int],
                   sampler: str, timesteps: tuple[int, ...],
                   formulation: Formulation) -> jax.Array:
  """The pure, jitted body of ``super_resolve``: ``lr`` (B, h, w, C) [0, 1] -> (B, H, W, C) [0, 1]."""
  prior = compute_prior(model, params, lr, out_shape)
  x_T = jax.random.normal(jax.random.fold_in(rng, 0), prior.shape, jnp.float32)
  image = sample_given_prior(model, params, prior, x_T, jax.random.fold_in(rng, 1),
                             schedule=schedule, formulation=formulation, sampler=sampler, eta=eta,
                             timesteps=timesteps)
  return _to_unit(image)


@functools.partial(jax.jit, static_argnames=("model", "out_shape"))
def _prior_only(model: NeurOpDiff, params: dict, lr: jax.Array, *,
                out_shape: tuple[int, int]) -> jax.Array:
  return _to_unit(compute_prior(model, params, lr, out_shape))


def _sampling_options(sampler: str, steps: int, eta: float | jax.Array, skip: str | None,
                      schedule: Schedule | None) -> tuple[tuple[int, ...], Schedule, jax.Array]:
  """Validate the sampler options: ``(timesteps, schedule, eta as a float32 array)``."""
  if sampler not in SAMPLERS:
    raise ValueError(f"unknown sampler {sampler!r}: choose one of {tuple(SAMPLERS)}")
  if sampler != "ddim" and isinstance(eta, (int, float)) and eta != 0:
    raise ValueError(f"eta applies to 'ddim' only, got eta={eta} with {sampler!r}")
  schedule = default_schedule() if schedule is None else schedule
  timesteps = timestep_sequence(schedule, steps, DEFAULT_SKIP[sampler] if skip is None else skip)
  return timesteps, schedule, jnp.asarray(eta, jnp.float32)


def super_resolve(model: NeurOpDiff, params: dict, lr: jax.Array, *, scale: float | None = None,
                  out_shape: tuple[int, int] | None = None, rng: jax.Array, sampler: str = "ddim",
                  steps: int = 50, eta: float | jax.Array = 0.0, skip: str | None = None,
                  schedule: Schedule | None = None,
                  formulation: Formulation = Formulation()) -> jax.Array:
  """NeurOp-Diff super-resolution: ``lr`` ``(B, h, w, C)`` in [0, 1] -> ``(B, H, W, C)`` in [0, 1].

  The prior is computed once; then ``steps`` steps of ``sampler`` run in one ``lax.scan`` from
  x_T ~ N(0, 1). Jitted; works inside the caller's ``jit`` and under ``vmap``.

  Args:
    model: ``make_model(cfg)``; with ``cfg.dtype = 'bfloat16'`` the network computes in bfloat16
      and the result is still float32.
    params: ``{'params': {'operator': ..., 'unet': ...}}`` (the EMA weights for sampling).
    lr: ``(B, h, w, C)`` float images in [0, 1].
    scale: the upsampling factor (a Python number >= 1, non-integer allowed), or
    out_shape: the HR size ``(H, W)``; give exactly one of the two.
    rng: a PRNG key: x_T from ``fold_in(rng, 0)``, the sampler's noise from ``fold_in(rng, 1)``.
    sampler: 'ddim' (the paper), 'ddpm' or 'dpm_solver_pp'.
    steps: the number of sampling steps (50 in the paper).
    eta: DDIM stochasticity, 0 = deterministic given x_T (the paper); 'ddim' only.
    skip: the timestep spacing; None = 'uniform' for 'ddim' and 'ddpm', 'logsnr' for
      'dpm_solver_pp'.
    schedule: the variance schedule; None = the original linear one (``default_schedule``).
    formulation: what the UNet predicts and where it diffuses; the paper's (eps, image) by
      default. A run's own: ``schedule, formulation = checkpoints.restore_sampling(workdir)``.

  Returns:
    ``(B, H, W, C)`` float32 in [0, 1].

  Raises:
    ValueError: on a bad ``lr`` (see ``check_images``), scale or out_shape
      (``untiled_output_size``), an unknown sampler or skip, or eta != 0 with a sampler other than
      'ddim'.
  """
  check_images(lr, model.operator.channels)
  out_shape = untiled_output_size(lr.shape, scale=scale, out_shape=out_shape)
  timesteps, schedule, eta = _sampling_options(sampler, steps, eta, skip, schedule)
  return _super_resolve(model, params, jnp.asarray(lr, jnp.float32), _typed_key(rng), eta, schedule,
                        out_shape=out_shape, sampler=sampler, timesteps=timesteps,
                        formulation=formulation)


@functools.partial(jax.jit, static_argnames=("model", "out_shape", "sampler", "timesteps",
                                             "formulation"))
def _sample_spread(model: NeurOpDiff, params: dict, lr: jax.Array, rngs: jax.Array,
                   eta: jax.Array, schedule: Schedule, **static) -> tuple[jax.Array, jax.Array]:
  """Mean and standard deviation over the draws of ``_super_resolve``, one per key of ``rngs``."""
  draws = jax.vmap(lambda rng: _super_resolve(model, params, lr, rng, eta, schedule, **static))(rngs)
  return draws.mean(axis=0), draws.std(axis=0)


def super_resolve_samples(model: NeurOpDiff, params: dict, lr: jax.Array, *, samples: int,
                          scale: float | None = None, out_shape: tuple[int, int] | None = None,
                          rng: jax.Array, sampler: str = "ddim", steps: int = 50,
                          eta: float | jax.Array = 0.0, skip: str | None = None,
                          schedule: Schedule | None = None,
                          formulation: Formulation = Formulation()) -> tuple[jax.Array, jax.Array]:
  """``samples`` draws of ``super_resolve`` in one program, summarised per pixel.

  The draws use the keys ``jax.random.split(rng, samples)`` and run vmapped (the prior is computed
  once); where they disagree the model is guessing. Arguments as ``super_resolve``.

  Returns:
    ``(mean, std)``, each ``(B, H, W, C)`` float32: the mean of the draws in [0, 1] and their
    standard deviation (ddof 0; zeros for one draw), in the same [0, 1] units.
  """
  if samples < 1:
    raise ValueError(f"samples must be at least 1, got {samples}")
  check_images(lr, model.operator.channels)
  out_shape = untiled_output_size(lr.shape, scale=scale, out_shape=out_shape)
  timesteps, schedule, eta = _sampling_options(sampler, steps, eta, skip, schedule)
  rngs = jax.random.split(_typed_key(rng), samples)
  return _sample_spread(model, params, jnp.asarray(lr, jnp.float32), rngs, eta, schedule,
                        out_shape=out_shape, sampler=sampler, timesteps=timesteps,
                        formulation=formulation)


def prior_only(model: NeurOpDiff, params: dict, lr: jax.Array, *, scale: float | None = None,
               out_shape: tuple[int, int] | None = None) -> jax.Array:
  """The neural-operator (SRNO) baseline: ``(B, H, W, C)`` float32 in [0, 1], clipped.

  Arguments and validation as ``super_resolve``; only the operator's parameters are read.
  """
  check_images(lr, model.operator.channels)
  out_shape = untiled_output_size(lr.shape, scale=scale, out_shape=out_shape)
  return _prior_only(model, params, jnp.asarray(lr, jnp.float32), out_shape=out_shape)


def make_super_resolver(model: NeurOpDiff, *, lr_shape: Sequence[int], scale: float | None = None,
                        out_shape: tuple[int, int] | None = None, sampler: str = "ddim",
                        steps: int = 50, eta: float = 0.0, skip: str | None = None,
                        schedule: Schedule | None = None,
                        formulation: Formulation = Formulation()) -> Resolver:
  """A super-resolver ``(params, lr, rng) -> (B, H, W, C)`` for inputs of shape ``lr_shape``.

  The shapes and options are validated and fixed once; every call runs the same compiled program
  (compiled on the first call, then taken from JAX's jit cache, which resolvers with the same
  options share with ``super_resolve``). Parameters and rng may change freely; ``lr`` must have
  shape ``lr_shape`` (another shape raises ValueError: build another resolver). See the module
  docstring for what else would compile a new program.

  Args:
    model: ``make_model(cfg)``.
    lr_shape: ``(B, h, w, C)``, the shape every ``lr`` will have.
    scale, out_shape, sampler, steps, eta, skip, schedule, formulation: as ``super_resolve``.

  Returns:
    ``resolver(params, lr, rng)``: ``lr`` ``(B, h, w, C)`` in [0, 1] -> float32 ``(B, H, W, C)`` in
    [0, 1].
  """
  lr_shape = tuple(int(n) for n in lr_shape)
  check_layout(lr_shape, jnp.float32, model.operator.channels)
  hr_shape = untiled_output_size(lr_shape, scale=scale, out_shape=out_shape)
  timesteps, schedule, eta = _sampling_options(sampler, steps, eta, skip, schedule)

  def resolver(params: dict, lr: jax.Array, rng: jax.Array) -> jax.Array:
    if tuple(lr.shape) != lr_shape:
      raise ValueError(f"lr has shape {tuple(lr.shape)} but this resolver was made for {lr_shape}: "
                       "make another resolver (or call super_resolve) for other shapes")
    check_images(lr, model.operator.channels)
    return _super_resolve(model, params, jnp.asarray(lr, jnp.float32), _typed_key(rng), eta,
                          schedule, out_shape=hr_shape, sampler=sampler, timesteps=timesteps,
                          formulation=formulation)

  return resolver
