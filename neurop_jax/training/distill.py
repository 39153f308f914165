"""Distillation of a stage-2 teacher into a few-step student: its pairs, its loss and its step.

The student is a UNet of the teacher's architecture that starts from the teacher's EMA weights
and is sampled as the teacher is (same formulation: target and space), with deterministic DDIM
over N 'trailing' timesteps (``diffusion.samplers``: 1 step of 2000 is (1999,), 4 steps are
(499, 999, 1499, 1999)); N is any of ``config.distill.steps``, trained together with one set of
weights. The method is the fixed-noise regression of knowledge distillation (Luhman and Luhman
2021) and SinSR (Wang et al. 2024): for each stored pair of start noise x_T and prior, the
student's N-step output regresses the teacher's deterministic ``teacher_steps``-step DDIM output
from the same x_T (L1, ``teacher_weight``), plus optional ground-truth terms: L1 to the HR
(``hr_weight``, SinSR's consistency term) and LPIPS to the HR (``lpips_weight``). The pairs are
generated once per workdir (``make_pairs``: training crops of the stage-2 pipeline, their prior,
x_T and the teacher's output) and stored in ``<workdir>/student/pairs.npz``; training then costs
N student evaluations per pair and step, with no teacher in the loop.

Arrays are NHWC float32: ``hr`` in [0, 1]; ``prior``, ``x_T`` (standard normal) and ``teacher``
in the [-1, 1] image scale.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Callable, Iterator

import grain
import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm import tqdm

from neurop_jax.diffusion.formulation import Formulation
from neurop_jax.diffusion.samplers import STUDENT, sample_conditioned, timestep_sequence
from neurop_jax.diffusion.schedule import Schedule
from neurop_jax.io.atomic import atomic_path
from neurop_jax.training.state import TrainState, apply_gradients

# (params, x_t, g, prior) -> output, with params {'params': {'student': ...}}: the student network
# (``inference.api.UNetDenoiser(model, 'student')``).
DenoiseFn = Callable[[Any, jax.Array, jax.Array, jax.Array], jax.Array]
PAIR_FIELDS = ("hr", "prior", "x_T", "teacher")


def student_image(denoise: DenoiseFn, params: Any, prior: jax.Array, x_T: jax.Array, *,
                  schedule: Schedule, formulation: Formulation, steps: int) -> jax.Array:
  """The student's output in ``steps`` evaluations: deterministic DDIM over the 'trailing'
  sequence, ``prior`` and ``x_T`` ``(B, H, W, C)`` -> ``(B, H, W, C)`` in [-1, 1] (clipped): what
  ``super_resolve(..., sampler='student', steps=steps)`` computes from the same prior and x_T."""
  net_fn = lambda x, g: denoise(params, x, g, prior)
  return sample_conditioned(net_fn, prior, x_T, jax.random.key(0), schedule=schedule,
                            formulation=formulation, sampler="ddim",
                            timesteps=timestep_sequence(schedule, steps, "trailing"))


def distill_step(state: TrainState, batch: dict[str, jax.Array], rng: jax.Array, *,
                 denoise: DenoiseFn, tx: optax.GradientTransformation,
                 schedule: optax.Schedule, ema_decay: float, noise: Schedule,
                 formulation: Formulation, steps: tuple[int, ...], teacher_weight: float,
                 hr_weight: float, lpips_weight: float = 0.0,
                 perceptual: Callable[[jax.Array, jax.Array], jax.Array] | None = None
                 ) -> tuple[TrainState, dict[str, jax.Array]]:
  """One step of distillation on a batch of pairs (``PAIR_FIELDS``, see the module docstring).

  Step k trains the student at N = ``steps[k % len(steps)]`` evaluations (the step counts in
  turn, one set of weights; a ``lax.switch``, so a step costs N evaluations, not their sum). The
  loss is teacher_weight L1(student_N, teacher) + hr_weight L1(student_N, hr) + lpips_weight
  LPIPS(student_N, hr), images in [-1, 1] for L1 and mapped to [0, 1] for ``perceptual``
  (``(B, H, W, 3)`` pairs -> ``(B,)``). ``rng`` is unused (the student is deterministic: no
  dropout). Metrics: loss, grad_norm, lr, ``teacher_l1`` and ``student_steps`` (N).
  """
  del rng
  if lpips_weight and perceptual is None:
    raise ValueError("lpips_weight > 0 needs the perceptual distance (perceptual=...)")
  prior, x_T = batch["prior"], batch["x_T"]
  hr = batch["hr"] * 2 - 1

  def loss_of(n, params):
    image = student_image(denoise, {"params": {STUDENT: params}}, prior, x_T, schedule=noise,
                          formulation=formulation, steps=n)
    to_teacher = jnp.mean(jnp.abs(image - batch["teacher"]))
    loss = teacher_weight * to_teacher + hr_weight * jnp.mean(jnp.abs(image - hr))
    if lpips_weight:
      loss = loss + lpips_weight * jnp.mean(perceptual((image + 1) / 2, batch["hr"]))
    return loss, {"teacher_l1": to_teacher, "student_steps": jnp.float32(n)}

  branches = [functools.partial(loss_of, n) for n in steps]
  loss_fn = lambda params: jax.lax.switch(state.step % len(steps), branches, params)
  (value, parts), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  metrics = {"loss": value, "grad_norm": optax.global_norm(grads), "lr": schedule(state.step),
             **parts}
  return apply_gradients(state, grads, tx, ema_decay), metrics


def make_pairs(batches: Iterator[dict[str, np.ndarray]], count: int,
               prior_fn: Callable[[np.ndarray, np.ndarray], jax.Array],
               teacher_fn: Callable[[jax.Array, jax.Array], jax.Array], key: jax.Array,
               progress: bool = True) -> dict[str, np.ndarray]:
  """``count`` pairs from training ``batches`` (dicts with 'hr' ``(B, H, W, C)`` in [0, 1] and 'lr'),
  whole batches (the last one cut): x_T of batch b is ``normal(fold_in(key, b))``; ``prior_fn(lr,
  hr)`` is the frozen prior ([-1, 1]) and ``teacher_fn(prior, x_T)`` the teacher's sample."""
  fields: dict[str, list[np.ndarray]] = {name: [] for name in PAIR_FIELDS}
  made, index = 0, 0
  with tqdm(total=count, desc="teacher pairs", unit="pair", disable=not progress) as bar:
    while made < count:
      batch = next(batches)
      prior = prior_fn(batch["lr"], batch["hr"])
      x_T = jax.random.normal(jax.random.fold_in(key, index), prior.shape, jnp.float32)
      values = dict(hr=batch["hr"], prior=prior, x_T=x_T, teacher=teacher_fn(prior, x_T))
      take = min(count - made, prior.shape[0])
      for name in PAIR_FIELDS:
        fields[name].append(np.asarray(values[name], np.float32)[:take])
      made, index = made + take, index + 1
      bar.update(take)
  return {name: np.concatenate(parts) for name, parts in fields.items()}


def read_pairs(path: Path, meta: dict[str, Any]) -> dict[str, np.ndarray] | None:
  """The pairs stored at ``path`` if they were made with ``meta`` (the teacher step, count, crop
  and seeds), else None (none there, or made for another teacher or config)."""
  if not path.is_file():
    return None
  with np.load(path) as stored:
    made_with = {k: str(stored[f"meta_{k}"]) for k in meta if f"meta_{k}" in stored.files}
    if made_with != {k: str(v) for k, v in meta.items()}:
      return None
    return {name: stored[name] for name in PAIR_FIELDS}


def write_pairs(path: Path, pairs: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
  """Stores ``pairs`` and ``meta`` at ``path`` atomically (a kill leaves no partial file)."""
  with atomic_path(path) as tmp:
    with open(tmp, "wb") as f:
      np.savez(f, **pairs, **{f"meta_{k}": np.asarray(str(v)) for k, v in meta.items()})


class PairSource:
  """The stored pairs as a grain data source: element i is ``{field: (H, W, C)}``."""

  def __init__(self, pairs: dict[str, np.ndarray]):
    self.pairs = pairs

  def __len__(self) -> int:
    return len(self.pairs["hr"])

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    return {name: values[index] for name, values in self.pairs.items()}


def pair_pipeline(pairs: dict[str, np.ndarray], batch_size: int,
                  seed: int) -> grain.DatasetIterator:
  """Shuffled batches of ``batch_size`` pairs, epoch after epoch (checkpointable position)."""
  if len(pairs["hr"]) < batch_size:
    raise ValueError(f"{len(pairs['hr'])} pairs are fewer than a batch of {batch_size}")
  ds = grain.MapDataset.source(PairSource(pairs)).shuffle(seed=seed).repeat()
  return iter(ds.to_iter_dataset().batch(batch_size, drop_remainder=True))

