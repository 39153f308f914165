"""Super-resolution from other JAX code: the prior once, then one compiled reverse-diffusion scan.

Every call takes a ``Run`` (``neurop_jax.inference.run``: ``load_run(workdir)`` for a trained
run, ``Run(model, params)`` for any parameters with the paper's defaults) and takes its defaults
from it: schedule, formulation, sampler, steps, spacing and eta; a keyword given here overrides
the run's (``Run.sampling_for``). Images at this boundary are NHWC float32 in [0, 1]: ``lr``
``(B, h, w, C)`` in, ``(B, H, W, C)`` out, with ``(H, W)`` given as ``out_shape`` or as ``scale``
(``(round(h * scale), round(w * scale))``, computed in Python from the static shape). Inside, the
model works in [-1, 1]::

  run = load_run("runs/ucm")
  hr = super_resolve(run, lr, scale=4, rng=jax.random.key(0))  # (B, 4h, 4w, C)

``neurop_jax.inference.tiled`` has the same calls, with the same arguments, for outputs of any
size. ``super_resolve`` validates its arguments in Python and calls one jitted pure function
(static: the model, the output shape, the sampler, the timestep sequence, i.e. ``steps`` and
``skip``, and the formulation); it works inside the caller's ``jit`` and under ``vmap`` (e.g. over
rng keys for several samples of one image). ``make_super_resolver`` fixes the shapes and options
once and returns a function ``(params, lr, rng) -> images`` that reuses the compiled program.

What compiles a new program (JAX's jit cache, shared by ``super_resolve`` and every resolver
built with the same options): a new model (another config or dtype), a new output shape, sampler,
``steps``, ``skip``, formulation or schedule values that change the timestep sequence; a new
``lr`` shape (batch size included); parameters of other shapes or dtypes (e.g. cast to bfloat16).
Not a recompile: new parameter values, new images of the same shape, a new rng, a new ``eta``, a
schedule with other values but the same sequence, ``lr`` of another float dtype (cast to float32
before the call), raw uint32 keys vs typed keys (both are passed on as typed keys).

Sampling follows the paper: x_T ~ N(0, 1) of the HR shape from ``fold_in(rng, 0)``, the sampler's
own randomness from ``fold_in(rng, 1)``; the final [-1, 1] sample is clipped and mapped to [0, 1].
Image b of a batch draws from ``image_key(rng, b) = fold_in(rng, b)``; ``samples=K`` draws K samples
in one program, draw d as the call with ``rng=split(rng, K)[d]`` would (``draw_keys``), and returns
their per-pixel mean and standard deviation. The draws run ``SAMPLE_GROUP`` at a time
(``map_draws``), so the activations held are a group's whatever K is.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from neurop_jax.diffusion.formulation import Formulation
from neurop_jax.diffusion.samplers import NoiseFn, ProjectFn, Trajectory, sample_conditioned
from neurop_jax.diffusion.schedule import Schedule
from neurop_jax.inference import tiles
from neurop_jax.inference.consistency import input_projection
from neurop_jax.inference.run import Run
from neurop_jax.models import NeurOpDiff, compute_prior, to_unit

RANGE_TOLERANCE = 0.1
"""How far outside [0, 1] concrete ``lr`` values may lie: bicubic downsampling (as
``neurop_jax.data.degrade`` and PIL do it) overshoots slightly and the model was trained on such
inputs; anything further (uint8 in 0..255, [-1, 1] images) is an error."""

MAX_OUTPUT_PIXELS = 2048 * 2048
"""The largest output ``B * H * W`` the untiled API accepts (a 512x512 image at x4). The prior's
Galerkin attention holds several width-256 float32 feature maps of the output size at once, over
2 KB per output pixel (a 3200x3200 output exhausted 20 GB), and the UNet more: beyond this bound
a machine's memory, not the model, decides whether a call survives. Larger outputs go through
``neurop_jax.inference.tiled.super_resolve_tiled`` (or ``python -m neurop_jax.upsample``), whose
memory
depends on the tile, not the scene."""

SAMPLE_GROUP = 4
"""Draws of one image computed together (vmapped) in the K-sample loop: its activations, the
largest part of a sample's memory, grow with the group, not with K."""

Resolver = Callable[[dict, jax.Array, jax.Array], jax.Array]


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
                     f"({MAX_OUTPUT_PIXELS}) of the untiled API: use neurop_jax.inference.tiled."
                     "super_resolve_tiled (bounded memory), a smaller scale or a smaller batch")
  return out_h, out_w


def check_layout(lr_shape: Sequence[int], dtype: jnp.dtype, channels: int = 3) -> None:
  """Raise ValueError unless ``lr_shape`` is NHWC ``(B, h, w, channels)`` and ``dtype`` a float."""
  if len(lr_shape) != 4:
    hint = " (a single HWC image: pass lr[None])" if len(lr_shape) == 3 else ""
    raise ValueError(f"lr has shape {tuple(lr_shape)}: expected NHWC (B, h, w, {channels}){hint}")
  if not lr_shape[1] or not lr_shape[2]:
    raise ValueError(f"lr has shape {tuple(lr_shape)}: its images are empty; give images of at "
                     "least one pixel per side")
  if lr_shape[-1] != channels:
    if lr_shape[1] == channels:
      raise ValueError(f"lr has shape {tuple(lr_shape)}, which looks like NCHW: images are NHWC "
                       f"(B, h, w, {channels}); transpose with lr.transpose(0, 2, 3, 1)")
    what = ("(RGB): convert grayscale or RGBA images to RGB first" if channels == 3 else
            "(the model's bands)")
    raise ValueError(f"lr has {lr_shape[-1]} channels, expected {channels} {what}")
  if not jnp.issubdtype(dtype, jnp.floating):
    raise ValueError(f"lr has dtype {dtype}: images must be floats in [0, 1]; divide uint8 by 255")


@jax.jit
def _value_summary(lr: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """``(non-finite count, min, max)`` of ``lr`` over its finite values, computed where it lives."""
  finite = jnp.isfinite(lr)
  return ((~finite).sum(), jnp.where(finite, lr, jnp.inf).min(),
          jnp.where(finite, lr, -jnp.inf).max())


def check_array(lr: Any, channels: int = 3, name: str = "lr") -> None:
  """Raise TypeError unless ``lr`` is an array (NumPy or JAX; not a list of images)."""
  if not isinstance(lr, (np.ndarray, jax.Array)):
    raise TypeError(f"{name} is a {type(lr).__name__}: pass one array of shape (B, h, w, "
                    f"{channels}), e.g. np.stack(images) for a list of equally sized images")


def check_images(lr: jax.Array | np.ndarray, channels: int = 3) -> None:
  """Raise ValueError unless ``lr`` is a float NHWC batch ``(B, h, w, channels)`` in [0, 1].

  The values (finite, in range) are checked only on concrete arrays (not under jit or vmap
  tracing), with ``RANGE_TOLERANCE`` for bicubic overshoot: a device array is summarised on its
  device (three scalars come back, not the image); checking waits for the array to be computed.
  """
  check_array(lr, channels)
  check_layout(lr.shape, lr.dtype, channels)
  if isinstance(lr, jax.core.Tracer):
    return
  if isinstance(lr, jax.Array):
    with jax.ensure_compile_time_eval():  # concrete even inside a caller's jit
      bad, lo, hi = (float(v) for v in jax.device_get(_value_summary(lr)))
  else:
    finite = np.isfinite(lr)
    bad = float(lr.size - finite.sum())
    lo = float(np.min(lr, where=finite, initial=np.inf))
    hi = float(np.max(lr, where=finite, initial=-np.inf))
  if bad:
    raise ValueError(f"lr holds {int(bad)} NaN or infinite values: fill them (e.g. with "
                     "np.nan_to_num or the image's mean) before super-resolving")
  if lo < -RANGE_TOLERANCE or hi > 1 + RANGE_TOLERANCE:
    raise ValueError(f"lr values span [{lo:.3g}, {hi:.3g}]: images must be in [0, 1]; divide uint8 "
                     "by 255, map [-1, 1] images with (x + 1) / 2")


def on_device(lr: jax.Array | np.ndarray) -> jax.Array:
  """``lr`` as a float32 JAX array: a NumPy array is copied to the default device explicitly
  (``jax.device_put``, allowed under ``jax.transfer_guard('disallow')``); a JAX array or a tracer
  is cast where it is."""
  if isinstance(lr, np.ndarray):
    return jax.device_put(lr.astype(np.float32, copy=False))
  return jnp.asarray(lr, jnp.float32)


def check_key(rng: Any) -> None:
  """Raise TypeError unless ``rng`` is a PRNG key (an array: typed, or raw uint32; not None)."""
  if not isinstance(rng, (jax.Array, np.ndarray)):
    raise TypeError(f"rng is {rng!r}: diffusion needs a PRNG key, e.g. rng=jax.random.key(0)")


def _typed_key(rng: jax.Array) -> jax.Array:
  """A typed PRNG key from a typed key or a raw uint32 one (``jax.random.PRNGKey``); TypeError
  for anything else (``check_key``)."""
  check_key(rng)
  if jnp.issubdtype(rng.dtype, jax.dtypes.prng_key):
    return rng
  return jax.random.wrap_key_data(rng)


def sample_given_prior(model: NeurOpDiff, params: dict, prior: jax.Array, x_T: jax.Array,
                       rng: jax.Array, *, schedule: Schedule,
                       formulation: Formulation = Formulation(), sampler: str = "ddim",
                       steps: int = 50, eta: jax.Array | float = 0.0, skip: str = "uniform",
                       timesteps: Sequence[int] | None = None, return_trajectory: bool = False,
                       noise: NoiseFn | None = None) -> jax.Array | tuple[jax.Array, Trajectory]:
  """Reverse diffusion from ``x_T`` conditioned on a precomputed ``prior``: one ``lax.scan``.

  Args:
    model: the NeurOp-Diff module (its ``denoise`` is the network).
    params: ``{'params': {'operator': ..., 'unet': ...}}`` (only the UNet's are read).
    prior: ``(B, H, W, C)`` the operator's image in the [-1, 1] scale (``compute_prior``).
    x_T: ``(B, H, W, C)`` standard normal start noise.
    rng: a PRNG key for the stochastic samplers.
    formulation: what the UNet predicts and in which space it diffuses (the paper: eps, image).
    schedule, sampler, steps, eta, skip, timesteps, return_trajectory, noise: as
      ``samplers.sample``.

  Returns:
    ``(B, H, W, C)`` the image in [-1, 1] (clipped), and the ``Trajectory`` if asked.
  """
  net_fn = lambda x, g: model.apply(params, x, g, prior, method=model.denoise)
  return sample_conditioned(net_fn, prior, x_T, rng, schedule=schedule, formulation=formulation,
                            sampler=sampler, steps=steps, eta=eta, skip=skip, timesteps=timesteps,
                            return_trajectory=return_trajectory, noise=noise)


def image_key(rng: jax.Array, index: int | jax.Array) -> jax.Array:
  """The key of image ``index`` of a batch: ``fold_in(rng, index)``. Every entry point draws an
  image's noise from its key alone, so an image gives the same output untiled or tiled. A Python
  ``index`` is copied to the device explicitly (it may be called outside jit, under a transfer
  guard)."""
  if isinstance(index, (int, np.integer)):
    index = jax.device_put(np.uint32(index))
  return jax.random.fold_in(rng, index)


DenoiseFn = Callable[[Any, jax.Array, jax.Array, jax.Array], jax.Array]


@dataclasses.dataclass(frozen=True)
class UNetDenoiser:
  """NeurOp-Diff's UNet, hashable: ``(params, x_t, g, prior) -> output`` (eps, x0 or v).

  ``network`` names the UNet's parameters in ``params['params']``: 'unet' (stage 2, the teacher)
  or 'student' (the distilled student of ``training.distill``, same architecture).
  """

  model: NeurOpDiff
  network: str = "unet"

  def __call__(self, params: dict, x_t: jax.Array, noise_level: jax.Array,
               prior: jax.Array) -> jax.Array:
    unet = {"params": {"unet": params["params"][self.network]}}
    return self.model.apply(unet, x_t, noise_level, prior, method=self.model.denoise)


def sample_image(denoise: DenoiseFn, params: Any, prior: jax.Array, rng: jax.Array,
                 eta: jax.Array, schedule: Schedule, *, sampler: str,
                 timesteps: tuple[int, ...], formulation: Formulation, strength: float = 1.0,
                 project: ProjectFn | None = None, origin: jax.Array | None = None) -> jax.Array:
  """One draw for one image from its key: ``prior`` ``(1, h, w, C)`` [-1, 1] -> ``(1, h, w, C)``
  in [0, 1].

  ``denoise(params, x_t, g, prior)`` is the network (``UNetDenoiser(model)``). x_T and every
  step's noise (the stochastic samplers') are windows of one standard-normal field over the
  output grid (``tiles.position_noise``; x_T from ``fold_in(rng, 0)``, step k from
  ``fold_in(fold_in(rng, 1), k)``) at ``origin``, the top-left pixel of ``prior`` in the output
  (None: the whole image), so a tile sees the noise the whole image would there. ``strength``:
  the fidelity dial of ``samplers.sample_conditioned`` (1: the whole chain); ``project``: its
  correction of each step's estimate (``consistency.input_projection``), None for none.
  """
  shape, channels = prior.shape[1:3], prior.shape[-1]
  origin = jnp.zeros(2, jnp.int32) if origin is None else origin
  noise = lambda key, _shape, _dtype: tiles.position_noise(key, origin, shape, channels)
  net_fn = lambda x, g: denoise(params, x, g, prior)
  image = sample_conditioned(net_fn, prior, noise(jax.random.fold_in(rng, 0), None, None),
                             jax.random.fold_in(rng, 1), schedule=schedule,
                             formulation=formulation, sampler=sampler, timesteps=timesteps,
                             strength=strength, noise=noise, project=project,
                             **({"eta": eta} if sampler == "ddim" else {}))
  return to_unit(image)


@functools.partial(jax.jit, static_argnames=("model", "out_shape", "sampler", "timesteps",
                                             "formulation", "strength", "consistency",
                                             "samples", "network", "group"))
def _super_resolve(model: NeurOpDiff, params: dict, lr: jax.Array, rng: jax.Array,
                   eta: jax.Array, schedule: Schedule, *, out_shape: tuple[int, int],
                   sampler: str, timesteps: tuple[int, ...], formulation: Formulation,
                   strength: float, consistency: bool, samples: int | None,
                   network: str = "unet", group: int = SAMPLE_GROUP) -> jax.Array:
  """The pure, jitted body of ``super_resolve``: ``lr`` (B, h, w, C) [0, 1] -> draws (B, K, H, W,
  C) in [0, 1] (K = 1 when ``samples`` is None), with the keys ``draw_keys(rng, samples, b)``,
  ``group`` draws at a time (``map_draws``)."""
  def image(lr_b, index):
    prior = compute_prior(model, params, lr_b[None], out_shape)
    project = input_projection(lr_b[None] * 2 - 1, out_shape) if consistency else None
    draw = lambda key: sample_image(UNetDenoiser(model, network), params, prior, key, eta,
                                    schedule,
                                    sampler=sampler, timesteps=timesteps,
                                    formulation=formulation, strength=strength,
                                    project=project)[0]
    return map_draws(draw, draw_keys(rng, samples, index), group)
  return jax.vmap(image)(lr, jnp.arange(lr.shape[0]))


def map_draws(draw: Callable[[jax.Array], jax.Array], keys: jax.Array,
              group: int = SAMPLE_GROUP) -> jax.Array:
  """``draw(key)`` for each of ``keys`` ``(K,)``, stacked ``(K, ...)``: ``lax.map`` over groups of
  ``group`` keys (the last one smaller), each group vmapped, so that the activations held are
  ``group`` draws', not K's; equal to ``vmap(draw)(keys)``."""
  return jax.lax.map(draw, keys, batch_size=min(group, keys.shape[0]))


def sampler_temp_bytes(run: Run, lr: jax.Array, *, scale: int, samples: int,
                       group: int = SAMPLE_GROUP) -> int:
  """XLA's temporary memory (bytes, this backend's memory analysis) of the program that draws
  ``samples`` samples of ``lr`` ``(B, h, w, C)`` at integer ``scale``, ``group`` draws at a time,
  by a 2-step DDIM (a scan's memory does not grow with its length). Compiled, not run."""
  compiled = _super_resolve.lower(
      run.model, run.params, lr, jax.random.key(0), jnp.float32(0), run.schedule,
      out_shape=(scale * lr.shape[1], scale * lr.shape[2]), sampler="ddim", timesteps=(999, 499),
      formulation=Formulation(), strength=1.0, consistency=False, samples=samples,
      group=group).compile()
  return int(compiled.memory_analysis().temp_size_in_bytes)


@functools.partial(jax.jit, static_argnames=("model", "out_shape", "consistency"))
def _prior_only(model: NeurOpDiff, params: dict, lr: jax.Array, *, out_shape: tuple[int, int],
                consistency: bool) -> jax.Array:
  prior = compute_prior(model, params, lr, out_shape)
  if consistency:
    prior = input_projection(lr * 2 - 1, out_shape)(prior)
  return to_unit(prior)


def check_samples(samples: int | None) -> None:
  """Raise ValueError unless ``samples`` is None (one draw) or an integer >= 1."""
  if samples is not None and (isinstance(samples, bool) or
                              not isinstance(samples, (int, np.integer)) or samples < 1):
    raise ValueError(f"samples must be an integer >= 1, got {samples!r}")


def draw_keys(rng: jax.Array, samples: int | None, index: int | jax.Array = 0) -> jax.Array:
  """The keys of the draws of image ``index`` of a batch: ``(K,)`` typed keys.

  Draw d's key is ``image_key(keys[d], index)`` with ``keys = split(rng, samples)``, or ``rng``
  itself for one draw (``samples`` None): draw d of a call with ``samples`` is the single draw of
  the same call with ``rng=split(rng, samples)[d]``.
  """
  rng = _typed_key(rng)
  keys = rng[None] if samples is None else jax.random.split(rng, samples)
  return jax.vmap(lambda key: image_key(key, index))(keys)


def _diffusion_options(run: Run, sampler: str | None, steps: int | None, skip: str | None,
                       eta: float | None, strength: float | None,
                       consistency: bool | None) -> dict:
  """The static and array options of a diffusion call: the run's defaults under the caller's."""
  sampling = run.checked_sampling(sampler, steps, skip, eta, strength, consistency)
  return dict(static=dict(sampler=sampling.solver, timesteps=sampling.timesteps(run.schedule),
                          formulation=run.formulation, strength=float(sampling.strength),
                          consistency=bool(sampling.consistency), network=sampling.network),
              eta=jax.device_put(np.float32(sampling.eta)))


def super_resolve(run: Run, lr: jax.Array, *, scale: float | None = None,
                  out_shape: tuple[int, int] | None = None, rng: jax.Array,
                  sampler: str | None = None, steps: int | None = None, skip: str | None = None,
                  eta: float | None = None, strength: float | None = None,
                  consistency: bool | None = None, samples: int | None = None,
                  params: dict | None = None) -> jax.Array | tuple[jax.Array, jax.Array]:
  """NeurOp-Diff super-resolution: ``lr`` ``(B, h, w, C)`` in [0, 1] -> ``(B, H, W, C)`` in [0, 1].

  The prior is computed once; then the sampler's steps run in one ``lax.scan`` from x_T ~ N(0,
  1). Jitted; works inside the caller's ``jit`` and under ``vmap``.

  Args:
    run: the model, its parameters and defaults (``load_run``, or ``Run(model, params)``: the
      paper's); with ``model_config.dtype = 'bfloat16'`` the network computes in bfloat16 and the
      result is still float32.
    lr: ``(B, h, w, C)`` float images in [0, 1].
    scale: the upsampling factor (a Python number >= 1, non-integer allowed), or
    out_shape: the HR size ``(H, W)``; give exactly one of the two.
    rng: a PRNG key: x_T from ``fold_in(rng, 0)``, the sampler's noise from ``fold_in(rng, 1)``.
    sampler: 'ddim' (the paper), 'ddpm', 'dpm_solver_pp' or 'student' (a run's distilled
      student, steps of 1 to 4); None: the run's (its student when it has one).
    steps: the number of sampling steps; None: the run's (50 for the paper).
    skip: the timestep spacing ('uniform', 'quad', 'logsnr'); None: the run's for its own sampler,
      else the sampler's (``DEFAULT_SKIP``).
    eta: DDIM stochasticity, 0 = deterministic given x_T (the paper); 'ddim' only.
    strength: the fidelity dial in [0, 1]; None: the run's (1 for the paper). 1 runs the whole
      chain from noise; s < 1 starts from the prior noised to the level of step round(s * S) of
      the S steps and runs those round(s * S) steps (s of the cost); 0 returns the prior itself
      (``prior_only``'s output, exactly). See ``samplers.sample_conditioned``.
    consistency: correct every step's clean estimate so that it degrades (by the bicubic of
      ``data.degrade``) exactly to ``lr``: the range-null-space projection of
      ``inference.consistency`` (DDNM). None: the run's (off for the paper).
    samples: K draws in one program (draw d as with ``rng=split(rng, K)[d]``): the result is
      then ``(mean, std)``.
    params: parameters to use instead of ``run.params`` (same structure).

  Returns:
    ``(B, H, W, C)`` float32 in [0, 1]; with ``samples``, ``(mean, std)``, each ``(B, H, W, C)``,
    the standard deviation (ddof 0) in the same units.

  Raises:
    ValueError: on a bad ``lr`` (see ``check_images``), scale or out_shape
      (``untiled_output_size``), an unknown sampler or skip, eta != 0 with a sampler other than
      'ddim', or a run without a UNet.
  """
  check_images(lr, run.channels)
  out_shape = untiled_output_size(lr.shape, scale=scale, out_shape=out_shape)
  options = _diffusion_options(run, sampler, steps, skip, eta, strength, consistency)
  params = run.params if params is None else params
  check_samples(samples)
  draws = _super_resolve(run.model, params, on_device(lr), _typed_key(rng),
                         options["eta"], run.schedule, out_shape=out_shape, samples=samples,
                         **options["static"])
  if samples is None:
    return draws[:, 0]
  return _moments(draws)


@jax.jit
def _moments(draws: jax.Array) -> tuple[jax.Array, jax.Array]:
  """The per-pixel mean and standard deviation (ddof 0) of ``draws`` ``(B, K, H, W, C)``."""
  return draws.mean(axis=1), draws.std(axis=1)


def prior_only(run: Run, lr: jax.Array, *, scale: float | None = None,
               out_shape: tuple[int, int] | None = None, consistency: bool = False,
               params: dict | None = None) -> jax.Array:
  """The neural-operator (SRNO) baseline: ``(B, H, W, C)`` float32 in [0, 1], clipped.

  Arguments and validation as ``super_resolve``; only the operator's parameters are read. With
  ``consistency`` the prior is projected once onto the images that degrade to ``lr``.
  """
  check_images(lr, run.channels)
  out_shape = untiled_output_size(lr.shape, scale=scale, out_shape=out_shape)
  params = run.params if params is None else params
  return _prior_only(run.model, params, on_device(lr), out_shape=out_shape,
                     consistency=bool(consistency))


def make_super_resolver(run: Run, *, lr_shape: Sequence[int], scale: float | None = None,
                        out_shape: tuple[int, int] | None = None, sampler: str | None = None,
                        steps: int | None = None, skip: str | None = None,
                        eta: float | None = None, strength: float | None = None,
                        consistency: bool | None = None) -> Resolver:
  """A super-resolver ``(params, lr, rng) -> (B, H, W, C)`` for inputs of shape ``lr_shape``.

  The shapes and options (over the run's defaults, as ``super_resolve``) are validated and fixed
  once; every call runs the same compiled program (compiled on the first call, then taken from
  JAX's jit cache, which resolvers with the same options share with ``super_resolve``). The
  parameters (``run.params`` or others of the same structure) and rng may change freely; ``lr``
  must have shape ``lr_shape`` (another shape raises ValueError: build another resolver). See the
  module docstring for what else would compile a new program.

  Args:
    run: the model and its defaults (its parameters are passed to each call).
    lr_shape: ``(B, h, w, C)``, the shape every ``lr`` will have.
    scale, out_shape, sampler, steps, skip, eta, strength, consistency: as ``super_resolve``.

  Returns:
    ``resolver(params, lr, rng)``: ``lr`` ``(B, h, w, C)`` in [0, 1] -> float32 ``(B, H, W, C)`` in
    [0, 1].
  """
  lr_shape = tuple(int(n) for n in lr_shape)
  check_layout(lr_shape, jnp.float32, run.channels)
  hr_shape = untiled_output_size(lr_shape, scale=scale, out_shape=out_shape)
  options = _diffusion_options(run, sampler, steps, skip, eta, strength, consistency)

  def resolver(params: dict, lr: jax.Array, rng: jax.Array) -> jax.Array:
    if tuple(lr.shape) != lr_shape:
      raise ValueError(f"lr has shape {tuple(lr.shape)} but this resolver was made for {lr_shape}: "
                       "make another resolver (or call super_resolve) for other shapes")
    check_images(lr, run.channels)
    return _super_resolve(run.model, params, on_device(lr), _typed_key(rng),
                          options["eta"], run.schedule, out_shape=hr_shape, samples=None,
                          **options["static"])[:, 0]

  return resolver
