"""Pure training steps of both stages and their compiled, data-parallel form.

A step is ``step(state, batch, rng) -> (state, metrics)`` with images NHWC float32 in [0, 1] (mapped
to [-1, 1] here, before the network). ``compile_steps`` turns a step into one jitted call that runs
``k`` steps with ``lax.scan`` over a stacked batch ``(k, B, ...)``, the rng of step ``n`` being
``fold_in(rng, n)``, of which the first ``count`` change the state (so that a shorter last chunk
runs in the same program); the batch is sharded over the 'data' axis of a mesh of all devices,
the state is replicated and donated (on accelerators).
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from neurop_jax.diffusion import schedule as diffusion
from neurop_jax.diffusion.formulation import Formulation, regression_target, split_prediction
from neurop_jax.models import NeurOpDiff, compute_prior
from neurop_jax.training.state import TrainState, apply_gradients

Batch = dict[str, jax.Array]
# (image, reference), each (B, H, W, 3) in [0, 1] -> (B,) distances: the perceptual term of stage 2.
PerceptualFn = Callable[[jax.Array, jax.Array], jax.Array]
Metrics = dict[str, jax.Array]
StepFn = Callable[[TrainState, Batch, jax.Array], tuple[TrainState, Metrics]]


def data_mesh(devices: list | None = None) -> Mesh:
  """A 1-D mesh named 'data' over ``devices`` (default: all devices of all processes)."""
  devices = jax.devices() if devices is None else devices
  return jax.make_mesh((len(devices),), ("data",), axis_types=(jax.sharding.AxisType.Auto,),
                       devices=devices)


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh, stacked: bool = False) -> NamedSharding:
  """The batch axis on 'data': axis 0, or axis 1 of a ``(k, B, ...)`` stack of batches."""
  return NamedSharding(mesh, P(None, "data") if stacked else P("data"))


def to_device(batch: dict[str, np.ndarray], sharding: NamedSharding) -> Batch:
  """A global batch, which every process holds whole, as global arrays (numeric fields only).

  Each process copies to its devices only the rows that ``sharding`` places there, so that a run
  of any number of processes computes on the same global batch (and the same row order) as one.
  The copies are explicit (``jax.device_put`` of each device's rows), as
  ``jax.transfer_guard('disallow')`` requires.
  """
  def put(value: np.ndarray) -> jax.Array:
    rows = sharding.addressable_devices_indices_map(value.shape)
    shards = [jax.device_put(value[index], device) for device, index in rows.items()]
    return jax.make_array_from_single_device_arrays(value.shape, sharding, shards)

  arrays = {k: np.asarray(v) for k, v in batch.items()}
  return {k: put(v) for k, v in arrays.items() if v.dtype.kind in "fiub"}


def operator_step(state: TrainState, batch: Batch, rng: jax.Array, *, model: NeurOpDiff,
                  tx: optax.GradientTransformation, schedule: optax.Schedule,
                  ema_decay: float) -> tuple[TrainState, Metrics]:
  """Stage 1: L1 between operator(lr, coord, cell) and gt, both in the [-1, 1] scale.

  ``batch``: lr ``(B, p, p, 3)``, coord ``(B, p, p, 2)``, cell ``(B, 2)``, gt ``(B, p, p, 3)``,
  in [0, 1]. ``rng`` is unused (the operator has no dropout). Metrics: loss, grad_norm, lr.
  """
  del rng

  def loss_fn(params):
    pred = model.apply({"params": {"operator": params}}, batch["lr"] * 2 - 1, batch["coord"],
                       batch["cell"], method=model.prior)
    return jnp.mean(jnp.abs(pred - (batch["gt"] * 2 - 1)))

  loss, grads = jax.value_and_grad(loss_fn)(state.params)
  metrics = {"loss": loss, "grad_norm": optax.global_norm(grads), "lr": schedule(state.step)}
  return apply_gradients(state, grads, tx, ema_decay), metrics


def diffusion_step(state: TrainState, batch: Batch, rng: jax.Array, *, model: NeurOpDiff,
                   tx: optax.GradientTransformation, schedule: optax.Schedule,
                   ema_decay: float, noise: diffusion.Schedule, loss: str,
                   per_sample_t: bool, formulation: Formulation = Formulation(),
                   lpips_weight: float = 0.0,
                   perceptual: PerceptualFn | None = None) -> tuple[TrainState, Metrics]:
  """Stage 2: SR3 denoising conditioned on the frozen prior.

  ``batch``: hr ``(B, H, W, 3)`` in [0, 1] and prior ``(B, H, W, 3)`` in [-1, 1] (the frozen
  operator's output, ``models.compute_prior``, computed outside: no gradient reaches it). x0 = hr*2-1
  ('image' space, the paper) or its scaled residual to the prior ('residual'); ``(x_t, g, eps)``
  from ``diffusion.sample_training_inputs`` with ``fold_in(rng, 0)``; dropout with
  ``fold_in(rng, 1)``; the loss compares the UNet's output with eps, x0 or v
  (``formulation.target``).

  With ``lpips_weight`` > 0 the loss adds ``lpips_weight`` times the mean of ``perceptual(image,
  hr)`` (``(B, H, W, 3)`` in [0, 1] -> ``(B,)``, e.g. LPIPS) between the clean image the
  prediction stands for (``split_prediction``'s x0, through ``formulation.image_of``, mapped to
  [0, 1] unclipped) and the HR, at every sampled noise level: the perceptual term of RSD and
  ResShift. 0 is the paper. Metrics: loss (the total), grad_norm, lr, and with the term
  ``regression_loss`` and ``perceptual_loss``.
  """
  if lpips_weight and perceptual is None:
    raise ValueError("lpips_weight > 0 needs the perceptual distance (perceptual=...)")
  prior = jax.lax.stop_gradient(batch["prior"])
  x0 = formulation.to_space(batch["hr"] * 2 - 1, prior)
  x_t, level, eps = diffusion.sample_training_inputs(jax.random.fold_in(rng, 0), noise, x0,
                                                     per_sample_t)
  target = regression_target(formulation.target, x0, eps, level * level)

  def loss_fn(params):
    pred = model.apply({"params": {"unet": params}}, x_t, level, prior, train=True,
                       method=model.denoise, rngs={"dropout": jax.random.fold_in(rng, 1)})
    regression = diffusion.diffusion_loss(pred, target, loss)
    if not lpips_weight:
      return regression, {}
    x0_hat, _ = split_prediction(formulation.target, pred, x_t, level * level)
    image = (formulation.image_of(x0_hat, prior) + 1) / 2
    term = jnp.mean(perceptual(image, batch["hr"]))
    return regression + lpips_weight * term, {"regression_loss": regression,
                                              "perceptual_loss": term}

  (value, parts), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  metrics = {"loss": value, "grad_norm": optax.global_norm(grads), "lr": schedule(state.step),
             **parts}
  return apply_gradients(state, grads, tx, ema_decay), metrics


def scan_steps(step: StepFn, state: TrainState, batches: Batch, rng: jax.Array,
               count: jax.Array | None = None) -> tuple[TrainState, Metrics]:
  """``k`` steps over ``batches`` stacked ``(k, B, ...)``; step n gets ``fold_in(rng, n)``.

  ``count`` (an int32 scalar, None: ``k``): only the first ``count`` steps update the state; the
  others are computed and discarded (their metrics are not meaningful), so that a chunk of fewer
  steps (the end of a stage or of ``max_steps_per_run``) runs in the program of ``k``. Returns the
  final state and the metrics of every step, each ``(k,)``; one step runs without a loop.
  (XLA:CPU, jax 0.10, leaves the convolutions of JAX's convolution gradients in a loop body in
  their transposed form and runs them about 10 times slower there: ``models.conv`` computes
  those gradients in forms that do not need that rewrite.)
  """
  def body(state, inputs):
    batch, index = inputs
    new, metrics = step(state, batch, jax.random.fold_in(rng, state.step))
    if count is not None:
      new = jax.tree.map(lambda n, o: jnp.where(index < count, n, o), new, state)
    return new, metrics

  k = jax.tree.leaves(batches)[0].shape[0]
  if k == 1:
    state, metrics = body(state, (jax.tree.map(lambda x: x[0], batches), 0))
    return state, jax.tree.map(lambda m: jnp.asarray(m)[None], metrics)
  return jax.lax.scan(body, state, (batches, jnp.arange(k)))


def compile_steps(step: StepFn, mesh: Mesh) -> Callable[[TrainState, Batch, jax.Array, jax.Array],
                                                         tuple[TrainState, Metrics]]:
  """``scan_steps`` of ``step`` jitted on ``mesh``: ``(state, batches, rng, count)``, the batch
  sharded on 'data', the state, rng and ``count`` (int32) replicated.

  The state is donated (updated in place) on accelerators, not on CPU, where host memory is not
  the limit.
  """
  rep = replicated(mesh)
  donate = () if mesh.devices.flat[0].platform == "cpu" else (0,)
  return jax.jit(functools.partial(scan_steps, step),
                 in_shardings=(rep, batch_sharding(mesh, stacked=True), rep, rep),
                 out_shardings=(rep, rep), donate_argnums=donate)


def compile_prior(model: NeurOpDiff, mesh: Mesh) -> Callable[[Any, jax.Array, jax.Array],
                                                              jax.Array]:
  """``(operator_params, lr, hr) -> prior`` at hr's grid, jitted (one compilation per LR size)."""
  data = batch_sharding(mesh)
  return jax.jit(lambda params, lr, hr: compute_prior(model, {"params": {"operator": params}}, lr,
                                                      hr.shape[1:3]),
                 in_shardings=(replicated(mesh), data, data), out_shardings=data)
