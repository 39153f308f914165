"""Reverse-diffusion samplers, each one compiled program: a single ``jax.lax.scan`` over the steps.

Every sampler takes the network as ``net_fn(x_t, noise_level) -> output`` with ``x_t`` of shape
``(B, H, W, C)`` in the diffusion space (the [-1, 1] image, or the scaled residual, see
``neurop_jax.diffusion.formulation``) and ``noise_level`` ``(B,)`` float32 = sqrt(alpha_bar), the SR3
continuous noise level (never a step index). ``target`` ('eps', the paper; 'x0'; 'v') says what the
output is; ``formulation.split_prediction`` turns it into the pair ``(x0, eps)`` the updates
use. The caller closes ``net_fn`` over the network parameters and the prior, which is computed
once, outside the loop::

  prior = model.apply(params, lr, coord, cell, method=model.prior)
  net_fn = lambda x, g: model.apply(params, x, g, prior, method=model.denoise)
  x0 = sample(net_fn, x_T, rng, schedule=schedule, sampler="ddim", steps=50)

A sampler walks a timestep sequence ``seq`` (increasing, e.g. range(0, T, T // S)) from its last
element to its first: step ``k`` goes from ``i = seq[-1-k]`` to ``j``, the element before it (-1
before 0, where alpha_bar = 1), so the last step lands on the clean sample. alpha_bar[-1] = 1 is
handled by indexing ``concat([1], alpha_bar)`` at ``t + 1``, as the original's ``compute_alpha``.
Randomness is ``jax.random.fold_in(rng, k)`` at step ``k``. ``steps``, ``skip``, ``sampler``,
``target``, ``timesteps``, ``clip`` and ``return_trajectory`` are static; everything works under
jit and vmap.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from neurop_jax.diffusion.formulation import Formulation, split_prediction
from neurop_jax.diffusion.schedule import Schedule
from neurop_jax.errors import InputError

NetFn = Callable[[jax.Array, jax.Array], jax.Array]
# (key, shape, dtype) -> standard normal noise of that shape: the step noise of the stochastic
# samplers (``jax.random.normal`` unless a caller, such as the tiled path, draws it by position).
NoiseFn = Callable[[jax.Array, tuple[int, ...], jnp.dtype], jax.Array]
# x0 (B, H, W, C) -> x0: a correction of every step's clean estimate (e.g. consistency with the
# input, ``neurop_jax.inference.consistency``), applied before the update uses it.
ProjectFn = Callable[[jax.Array], jax.Array]


class Trajectory(NamedTuple):
  """The states visited by a sampler of S steps (unclipped).

  Attributes:
    xs: ``(S+1, B, H, W, C)``: x_T, then the state after each step (the last is the sample).
    x0_preds: ``(S, B, H, W, C)``: the network's estimate of the clean image at each step.
  """

  xs: jax.Array
  x0_preds: jax.Array


def _uniform_sequence(schedule: Schedule, steps: int) -> np.ndarray:
  num_timesteps = schedule.num_timesteps
  return np.arange(0, num_timesteps, num_timesteps // steps)


def _quad_sequence(schedule: Schedule, steps: int) -> np.ndarray:
  return (np.linspace(0, np.sqrt(schedule.num_timesteps * 0.8), steps) ** 2).astype(np.int64)


def _logsnr_sequence(schedule: Schedule, steps: int) -> np.ndarray:
  alpha_bar = np.asarray(schedule.alphas_cumprod, np.float64)
  log_snr = np.log(alpha_bar) - np.log1p(-alpha_bar)
  top = schedule.num_timesteps - schedule.num_timesteps // steps
  targets = np.linspace(log_snr[top], log_snr[0], steps)
  return np.unique(np.abs(log_snr[None, :] - targets[:, None]).argmin(axis=1))


def _trailing_sequence(schedule: Schedule, steps: int) -> np.ndarray:
  num_timesteps = schedule.num_timesteps
  return np.round(np.arange(num_timesteps, 0, -num_timesteps / steps)).astype(np.int64)[::-1] - 1


SKIPS: dict[str, Callable[[Schedule, int], np.ndarray]] = {
    "uniform": _uniform_sequence,
    "quad": _quad_sequence,
    "logsnr": _logsnr_sequence,
    "trailing": _trailing_sequence,
}


def timestep_sequence(schedule: Schedule, steps: int, skip: str = "uniform") -> tuple[int, ...]:
  """A timestep sequence, increasing: ints in [0, T).

  'uniform' (the original): range(0, T, T // steps); 50 of 2000 gives 0, 40, ..., 1960, and there
  are more than ``steps`` elements when ``steps`` does not divide T. 'quad' (the original's other
  choice): int(linspace(0, sqrt(0.8 T), steps)**2), which may repeat 0 (a step that leaves x
  unchanged). 'logsnr': the discrete steps nearest to ``steps`` values of log(alpha_bar / (1 -
  alpha_bar)) evenly spaced from step T - T // steps down to step 0, repeats merged; the spacing
  DPM-Solver++ wants (with 'uniform' its steps into t = 0 are badly unbalanced). 'trailing' (Lin
  et al. 2024): round(T - k T / steps) - 1 for k = steps - 1 ... 0, so the first step starts at
  the noisiest level T - 1 (1 step of 2000: (1999,); 4: (499, 999, 1499, 1999)), the spacing of
  the distilled student (``sampler='student'``). 'logsnr' reads
  the schedule's values: under jit, close over the schedule or pass ``timesteps`` explicitly.
  """
  if skip not in SKIPS:
    raise ValueError(f"unknown skip {skip!r}: choose one of {tuple(SKIPS)}")
  if not 1 <= steps <= schedule.num_timesteps:
    raise ValueError(f"steps must be in [1, {schedule.num_timesteps}], got {steps}")
  return tuple(int(t) for t in SKIPS[skip](schedule, steps))


def timestep_pairs(timesteps: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
  """The visiting order of a sequence: ``(t, t_next)``, each ``(S,)`` int64, t_next = -1 last."""
  seq = np.asarray(timesteps, dtype=np.int64)
  seq_next = np.concatenate([[-1], seq[:-1]])
  return seq[::-1].copy(), seq_next[::-1].copy()


def alpha_bar_at(schedule: Schedule, t: np.ndarray) -> jax.Array:
  """alpha_bar at the steps ``t`` (ints in [-1, T)), alpha_bar[-1] = 1: float32, ``t``'s shape."""
  return jnp.concatenate([jnp.ones((1,), jnp.float32), schedule.alphas_cumprod])[np.asarray(t) + 1]


def noise_level_at(schedule: Schedule, t: np.ndarray) -> jax.Array:
  """The noise level sqrt(alpha_bar[t]) = g_prev[t + 1] the network sees: float32, ``t``'s shape."""
  return schedule.sqrt_alphas_cumprod_prev[np.asarray(t) + 1]


def ddim_update(x0: jax.Array, eps: jax.Array, a_i: jax.Array, a_j: jax.Array,
                eta: jax.Array | float, z: jax.Array) -> jax.Array:
  """The DDIM ("generalized") update from alpha_bar ``a_i`` to the less noisy ``a_j``.

  c1 = eta sqrt((1 - a_i/a_j)(1 - a_j)/(1 - a_i)); c2 = sqrt(1 - a_j - c1^2) (the root's argument
  floored at 0 against rounding); x_next = sqrt(a_j) x0 + c1 z + c2 eps.

  Args:
    x0, eps: ``(B, H, W, C)`` the predicted clean sample and noise at the current state.
    a_i, a_j: scalars, alpha_bar of the current and next step (``a_j`` = 1 for the last step).
    eta: 0 = deterministic DDIM, 1 = the ancestral (DDPM posterior) variance.
    z: ``(B, H, W, C)`` standard normal noise, used when eta > 0.

  Returns:
    ``(B, H, W, C)`` x_next.
  """
  c1 = eta * jnp.sqrt((1 - a_i / a_j) * (1 - a_j) / (1 - a_i))
  c2 = jnp.sqrt(jnp.maximum(1 - a_j - c1**2, 0))
  return jnp.sqrt(a_j) * x0 + c1 * z + c2 * eps


def ddpm_update(x: jax.Array, x0: jax.Array, a_i: jax.Array, a_j: jax.Array,
                z: jax.Array) -> jax.Array:
  """One ancestral update: a draw from the posterior q(x_j | x_i, x0) at the predicted x0.

  For a pair of steps (i, j) with j < i, possibly several discrete steps apart, the effective
  beta = 1 - a_i/a_j; the posterior mean is
  sqrt(a_j) beta / (1 - a_i) x0 + sqrt(1 - beta) (1 - a_j) / (1 - a_i) x_i, and its variance
  beta (1 - a_j) / (1 - a_i), which is 0 on the last step (a_j = 1). Shapes as ``ddim_update``.
  """
  beta = 1 - a_i / a_j
  mean = (jnp.sqrt(a_j) * beta / (1 - a_i)) * x0 + (jnp.sqrt(1 - beta) * (1 - a_j) / (1 - a_i)) * x
  return mean + jnp.sqrt(beta * (1 - a_j) / (1 - a_i)) * z


def _batch_level(x: jax.Array, g: jax.Array) -> jax.Array:
  return jnp.full((x.shape[0],), g, jnp.float32)


def _finish(x: jax.Array, x_T: jax.Array, outputs: tuple[jax.Array, jax.Array] | None,
            clip: bool, return_trajectory: bool) -> jax.Array | tuple[jax.Array, Trajectory]:
  final = jnp.clip(x, -1, 1) if clip else x
  if not return_trajectory:
    return final
  xs, x0_preds = outputs
  return final, Trajectory(jnp.concatenate([x_T[None], xs]), x0_preds)


# (x, x0, eps, a_i, a_j, z) -> x_next
Update = Callable[[jax.Array, jax.Array, jax.Array, jax.Array, jax.Array, jax.Array], jax.Array]


def _ancestral_scan(update: Update, net_fn: NetFn, x_T: jax.Array, rng: jax.Array,
                    schedule: Schedule, timesteps: Sequence[int], target: str, clip: bool,
                    return_trajectory: bool, noise: NoiseFn | None,
                    project: ProjectFn | None) -> jax.Array | tuple[jax.Array, Trajectory]:
  """Scan ``update(x, x0, eps, a_i, a_j, z) -> x_next`` over the pairs of ``timesteps``; z of step
  k is ``noise(fold_in(rng, k), x.shape, x.dtype)``; x0 passes through ``project`` first (eps
  stays the network's, as DDNM does)."""
  noise = jax.random.normal if noise is None else noise
  project = (lambda x0: x0) if project is None else project
  t, t_next = timestep_pairs(timesteps)
  per_step = (jnp.arange(len(t)), noise_level_at(schedule, t), alpha_bar_at(schedule, t),
              alpha_bar_at(schedule, t_next))

  def body(x, inputs):
    k, g, a_i, a_j = inputs
    z = noise(jax.random.fold_in(rng, k), x.shape, x.dtype)
    x0, eps = split_prediction(target, net_fn(x, _batch_level(x, g)), x, a_i)
    x0 = project(x0)
    x_next = update(x, x0, eps, a_i, a_j, z)
    return x_next, (x_next, x0) if return_trajectory else None

  x, outputs = jax.lax.scan(body, x_T, per_step)
  return _finish(x, x_T, outputs, clip, return_trajectory)


def ddim_sample(net_fn: NetFn, x_T: jax.Array, rng: jax.Array, schedule: Schedule,
                timesteps: Sequence[int], eta: jax.Array | float = 0.0, target: str = "eps",
                clip: bool = True, return_trajectory: bool = False,
                noise: NoiseFn | None = None,
                project: ProjectFn | None = None) -> jax.Array | tuple[jax.Array, Trajectory]:
  """DDIM ("generalized steps", the original's sampler) over ``timesteps``.

  Args:
    net_fn: the network, ``(x (B, H, W, C), g (B,)) -> output (B, H, W, C)``.
    x_T: ``(B, H, W, C)`` standard normal start noise.
    rng: a PRNG key, used when eta > 0.
    schedule: the variance schedule.
    timesteps: the increasing timestep sequence (static), e.g. ``timestep_sequence(schedule, 50)``.
    eta: 0 = deterministic (the paper), 1 = ancestral variance.
    target: what ``net_fn`` predicts, 'eps' (the paper), 'x0' or 'v' (static).
    clip: clip the final sample to [-1, 1] (static; image space).
    return_trajectory: also return the ``Trajectory`` (static).
    noise: the step noise, ``(key, shape, dtype) -> z``; None is ``jax.random.normal``.
    project: a correction of each step's x0 estimate (``ProjectFn``); None for none.

  Returns:
    ``(B, H, W, C)`` the sample (clipped to [-1, 1] if ``clip``), and the trajectory if asked.
  """
  update = lambda x, x0, eps, a_i, a_j, z: ddim_update(x0, eps, a_i, a_j, eta, z)
  return _ancestral_scan(update, net_fn, x_T, rng, schedule, timesteps, target, clip,
                         return_trajectory, noise, project)


def ddpm_sample(net_fn: NetFn, x_T: jax.Array, rng: jax.Array, schedule: Schedule,
                timesteps: Sequence[int], target: str = "eps", clip: bool = True,
                return_trajectory: bool = False, noise: NoiseFn | None = None,
                project: ProjectFn | None = None) -> jax.Array | tuple[jax.Array, Trajectory]:
  """Ancestral sampling (DDPM) over ``timesteps``: all T steps (range(T)) or a subsequence.

  Each step draws from the posterior of the (possibly skipped) pair, see ``ddpm_update``; the
  network sees the continuous noise level sqrt(alpha_bar[t]). Arguments and result as
  ``ddim_sample``.
  """
  update = lambda x, x0, eps, a_i, a_j, z: ddpm_update(x, x0, a_i, a_j, z)
  return _ancestral_scan(update, net_fn, x_T, rng, schedule, timesteps, target, clip,
                         return_trajectory, noise, project)


def _dpm_solver_pp_coefficients(a: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Per-step coefficients of DPM-Solver++(2M) for alpha_bar ``a`` ``(S+1,)`` from noisy to clean.

  With alpha = sqrt(a), sigma = sqrt(1 - a), lambda = log(alpha / sigma) and h_k = lambda_{k+1} -
  lambda_k, step k is x_{k+1} = ratio_k x_k + gain_k (x0_k + w_k (x0_k - x0_{k-1})) with
  ratio = sigma_{k+1} / sigma_k, gain = alpha_{k+1} (1 - e^{-h_k}) and w_k = h_k / (2 h_{k-1});
  w = 0 on the first step (no history) and on the last (to sigma = 0, lambda = inf: first order).
  """
  lam = 0.5 * (jnp.log(a) - jnp.log1p(-a))
  h = lam[1:] - lam[:-1]
  ratio = jnp.sqrt(1 - a[1:]) / jnp.sqrt(1 - a[:-1])
  gain = -jnp.sqrt(a[1:]) * jnp.expm1(-h)
  second_order = np.zeros(h.shape[0], bool)
  second_order[1:-1] = True
  w = jnp.where(second_order, 0.5 * h / jnp.concatenate([h[:1], h[:-1]]), 0.0)
  return ratio, gain, w


def dpm_solver_pp_sample(net_fn: NetFn, x_T: jax.Array, rng: jax.Array, schedule: Schedule,
                         timesteps: Sequence[int], target: str = "eps", clip: bool = True,
                         return_trajectory: bool = False, noise: NoiseFn | None = None,
                         project: ProjectFn | None = None
                         ) -> jax.Array | tuple[jax.Array, Trajectory]:
  """DPM-Solver++(2M) (Lu et al. 2022): multistep second order, data prediction, VP.

  Solves the probability-flow ODE from the last of ``timesteps`` down to the clean sample using
  the discrete alpha_bar of the schedule at those steps (the noise levels the network was trained
  on); repeated timesteps are merged. x0 comes from ``split_prediction`` (not clipped); the first
  step and the last (to alpha_bar = 1) are first order, where the update equals DDIM's.
  Deterministic: ``rng`` and ``noise`` are not used. Arguments and result as ``ddim_sample``.
  """
  del rng, noise
  project = (lambda x0: x0) if project is None else project
  seq = np.unique(np.asarray(timesteps, dtype=np.int64))
  t, _ = timestep_pairs(seq)
  a = alpha_bar_at(schedule, np.concatenate([t, [-1]]))
  ratio, gain, w = _dpm_solver_pp_coefficients(a)
  per_step = (noise_level_at(schedule, t), a[:-1], ratio, gain, w)

  def body(carry, inputs):
    x, x0_prev = carry
    g, a_i, ratio_k, gain_k, w_k = inputs
    x0, _ = split_prediction(target, net_fn(x, _batch_level(x, g)), x, a_i)
    x0 = project(x0)
    x_next = ratio_k * x + gain_k * (x0 + w_k * (x0 - x0_prev))
    return (x_next, x0), (x_next, x0) if return_trajectory else None

  (x, _), outputs = jax.lax.scan(body, (x_T, jnp.zeros_like(x_T)), per_step)
  return _finish(x, x_T, outputs, clip, return_trajectory)


SAMPLERS: dict[str, Callable[..., jax.Array | tuple[jax.Array, Trajectory]]] = {
    "ddim": ddim_sample,
    "ddpm": ddpm_sample,
    "dpm_solver_pp": dpm_solver_pp_sample,
}


STUDENT = "student"
"""The distilled few-step student (``training.distill``): deterministic DDIM over 'trailing' steps
with the student's UNet in place of the teacher's. Not a function of ``SAMPLERS``: the entry
points choose the network with ``Sampling.network`` and the update with ``Sampling.solver``."""

SAMPLER_NAMES = tuple(SAMPLERS) + (STUDENT,)
"""What ``Sampling.sampler`` may be: a sampler of ``SAMPLERS`` or the student."""

DEFAULT_SKIP: dict[str, str] = {"ddim": "uniform", "ddpm": "uniform", "dpm_solver_pp": "logsnr",
                                STUDENT: "trailing"}
"""Each sampler's timestep spacing when none is named: DPM-Solver++ needs 'logsnr', the student
'trailing' (the steps it was distilled at)."""


@dataclasses.dataclass(frozen=True)
class Sampling:
  """How to sample: the sampler, its number of steps, their spacing, DDIM's eta, the strength and
  whether each step's estimate is made consistent with the input (hashable).

  ``sampler='student'`` is the distilled student of a run (``training.distill``): DDIM with eta 0
  over ``steps`` 'trailing' steps, evaluating the student's UNet (``network``, ``solver``).

  The defaults are the paper's: DDIM, 50 uniform steps (a skip of None takes the sampler's own
  spacing, ``DEFAULT_SKIP``: 'trailing' for the student), eta 0, strength 1 (the whole chain from
  noise; see ``strength_timesteps`` for the fidelity dial), no consistency (``consistency``:
  the range-null-space correction of ``inference.consistency``, applied by the inference entry
  points, which hold the input). ``with_overrides`` applies a
  caller's choices over a run's defaults; every entry point resolves its options through it.
  """

  sampler: str = "ddim"
  steps: int = 50
  skip: str | None = None  # None: the sampler's own (DEFAULT_SKIP), 'uniform' for DDIM
  eta: float = 0.0
  strength: float = 1.0
  consistency: bool = False

  def __post_init__(self):
    if self.sampler not in SAMPLER_NAMES:
      raise InputError(f"unknown sampler {self.sampler!r}: choose one of {SAMPLER_NAMES}")
    if self.skip is None:
      object.__setattr__(self, "skip", DEFAULT_SKIP[self.sampler])
    if self.skip not in SKIPS:
      raise InputError(f"unknown skip {self.skip!r}: choose one of {tuple(SKIPS)}")
    if (isinstance(self.steps, bool) or not isinstance(self.steps, (int, np.integer))
        or self.steps < 1):
      raise InputError(f"steps must be an integer >= 1, got {self.steps!r}")
    if not (isinstance(self.eta, (int, float)) and 0 <= self.eta and math.isfinite(self.eta)):
      raise InputError(f"eta must be a finite number >= 0, got {self.eta!r}")
    if self.sampler != "ddim" and self.eta != 0:
      raise InputError(f"eta applies to 'ddim' only, got eta={self.eta} with {self.sampler!r}")
    if (isinstance(self.strength, bool) or not isinstance(self.strength, (int, float))
        or not 0 <= self.strength <= 1):
      raise InputError(f"strength must be a number in [0, 1], got {self.strength!r}")
    if not isinstance(self.consistency, (bool, np.bool_)):
      raise InputError(f"consistency must be True or False, got {self.consistency!r}")

  def with_overrides(self, sampler: str | None = None, steps: int | None = None,
                     skip: str | None = None, eta: float | None = None,
                     strength: float | None = None,
                     consistency: bool | None = None) -> "Sampling":
    """These settings with the given fields replaced; None keeps this one's value.

    A sampler other than this one's takes its own spacing (``DEFAULT_SKIP``) and eta 0 unless
    they are given; ``steps``, ``strength`` and ``consistency`` stay this one's unless given.
    """
    sampler = self.sampler if sampler is None else sampler
    same = sampler == self.sampler
    if skip is None:
      skip = self.skip if same else None
    if eta is None:
      eta = self.eta if same else 0.0
    return Sampling(sampler, int(self.steps if steps is None else steps), skip, float(eta),
                    self.strength if strength is None else strength,
                    self.consistency if consistency is None else consistency)

  @property
  def network(self) -> str:
    """The UNet these settings evaluate: 'student' (the distilled one) or 'unet' (the teacher)."""
    return STUDENT if self.sampler == STUDENT else "unet"

  @property
  def solver(self) -> str:
    """The update of ``SAMPLERS`` these settings run: 'ddim' for the student, else the sampler."""
    return "ddim" if self.sampler == STUDENT else self.sampler

  def timesteps(self, schedule: Schedule) -> tuple[int, ...]:
    """The timestep sequence of these settings on ``schedule`` (``timestep_sequence``)."""
    return timestep_sequence(schedule, self.steps, self.skip)


def sample(net_fn: NetFn, x_T: jax.Array, rng: jax.Array, *, schedule: Schedule,
           sampler: str = "ddim", steps: int = 50, eta: jax.Array | float = 0.0,
           skip: str = "uniform", timesteps: Sequence[int] | None = None, target: str = "eps",
           clip: bool = True, return_trajectory: bool = False, noise: NoiseFn | None = None,
           project: ProjectFn | None = None) -> jax.Array | tuple[jax.Array, Trajectory]:
  """Sample by name: 'ddim' (the original), 'ddpm' (ancestral) or 'dpm_solver_pp' (2M).

  Args:
    net_fn: the network, ``(x (B, H, W, C), g (B,)) -> output (B, H, W, C)``, closed over the
      parameters and the prior; its output is what ``target`` names.
    x_T: ``(B, H, W, C)`` standard normal start noise.
    rng: a PRNG key (for the stochastic samplers).
    schedule: the variance schedule.
    sampler: the sampler's name (static).
    steps: the number of timesteps S (static); ``steps = T`` with 'ddpm' is the full chain.
    eta: DDIM stochasticity; 'ddim' only (a nonzero Python number with another sampler is an
      error).
    skip: the spacing of the timesteps, 'uniform', 'quad' or 'logsnr' (static; see
      ``timestep_sequence``; 'logsnr' is the one for 'dpm_solver_pp').
    timesteps: an explicit increasing sequence (static), overriding ``steps`` and ``skip``.
    target: 'eps' (the paper), 'x0' or 'v' (static; see ``neurop_jax.diffusion.formulation``).
    clip: clip the final sample to [-1, 1] (static; False for residual space).
    return_trajectory: also return the ``Trajectory`` (static).
    noise: the step noise of 'ddpm' and DDIM with eta > 0, ``(key, shape, dtype) -> z`` (the
      tiled path draws it by position); None is ``jax.random.normal``.
    project: a correction of every step's x0 estimate before the update (``ProjectFn``, in the
      diffusion space); None for none.

  Returns:
    ``(B, H, W, C)`` the sample, and the trajectory if asked.
  """
  if sampler not in SAMPLERS:
    raise ValueError(f"unknown sampler {sampler!r}: choose one of {tuple(SAMPLERS)}")
  if sampler != "ddim" and isinstance(eta, (int, float)) and eta != 0:
    raise ValueError(f"eta applies to 'ddim' only, got eta={eta} with {sampler!r}")
  if timesteps is None:
    timesteps = timestep_sequence(schedule, steps, skip)
  options = {"eta": eta} if sampler == "ddim" else {}
  return SAMPLERS[sampler](net_fn, x_T, rng, schedule, timesteps, target=target, clip=clip,
                           return_trajectory=return_trajectory, noise=noise, project=project,
                           **options)


def strength_timesteps(timesteps: Sequence[int], strength: float) -> tuple[int, ...]:
  """The part of an increasing timestep sequence that a chain of ``strength`` runs.

  The first ``round(strength * S)`` of its S timesteps (the least noisy ones): the step count
  names the whole chain and a strength runs its share of those steps, so strength 0.3 of 50 DDIM
  steps runs 15 and costs 30% (the convention of diffusers' image-to-image pipelines). Strength 1
  is the whole sequence; strength 0 is none (the prior itself).
  """
  if not 0 <= strength <= 1:
    raise ValueError(f"strength must be in [0, 1], got {strength}")
  timesteps = tuple(int(t) for t in timesteps)
  return timesteps[:int(round(strength * len(timesteps)))]


def start_state(x_T: jax.Array, start: jax.Array, schedule: Schedule,
                timesteps: Sequence[int]) -> jax.Array:
  """The state a chain over ``timesteps`` starts from when it is shorter than the whole one:
  ``start`` (the clean sample, ``(B, H, W, C)``) noised to the last (noisiest) step ``t``,
  sqrt(alpha_bar[t]) start + sqrt(1 - alpha_bar[t]) x_T, with ``x_T`` the standard-normal noise."""
  a = alpha_bar_at(schedule, np.asarray(timesteps[-1]))
  return jnp.sqrt(a) * start + jnp.sqrt(1 - a) * x_T


def sample_conditioned(net_fn: NetFn, prior: jax.Array, x_T: jax.Array, rng: jax.Array, *,
                       schedule: Schedule, formulation: Formulation = Formulation(),
                       sampler: str = "ddim", steps: int = 50, eta: jax.Array | float = 0.0,
                       skip: str = "uniform", timesteps: Sequence[int] | None = None,
                       strength: float = 1.0, return_trajectory: bool = False,
                       noise: NoiseFn | None = None, project: ProjectFn | None = None
                       ) -> jax.Array | tuple[jax.Array, Trajectory]:
  """Reverse diffusion of any conditioned network in ``formulation``'s space, as an image.

  ``net_fn(x_t, g)`` is the network closed over its parameters and ``prior`` ``(B, H, W, C)``
  (the [-1, 1] scale); ``x_T`` ``(B, H, W, C)`` standard normal. The sampler runs in the
  formulation's space (image or scaled residual) with its target; the result is
  ``formulation.to_image``: ``(B, H, W, C)`` in [-1, 1], clipped. A trajectory, if asked, is in
  the diffusion space.

  ``strength`` (static, in [0, 1]) is the fidelity dial: 1 is the whole chain from ``x_T`` (the
  paper); below 1 the chain runs ``strength_timesteps`` of the sequence, from the prior's own
  clean sample (the prior in image space, the zero residual in residual space) noised to its
  first step with ``x_T`` (``start_state``, as SDEdit, DifFace and CCDF); 0 returns the prior
  (clipped to [-1, 1]).

  ``project`` corrects each step's clean estimate in image space (``(B, H, W, C)`` [-1, 1] scale
  -> same; linear, e.g. ``inference.consistency.input_projection``): it is applied to the image
  the estimate stands for (the prior plus the unscaled residual in residual space), and at
  strength 0 to the prior. Other arguments as ``sample``.
  """
  space_project = None
  if project is not None:
    space_project = lambda x0: formulation.to_space(project(formulation.image_of(x0, prior)),
                                                    prior)
  if strength != 1:
    if timesteps is None:
      timesteps = timestep_sequence(schedule, steps, skip)
    timesteps = strength_timesteps(timesteps, strength)
    start = formulation.to_space(prior, prior)
    if not timesteps:
      start = start if space_project is None else space_project(start)
      image = formulation.to_image(start, prior)
      return (image, Trajectory(start[None], start[:0])) if return_trajectory else image
    x_T = start_state(x_T, start, schedule, timesteps)
  out = sample(net_fn, x_T, rng, schedule=schedule, sampler=sampler, steps=steps, eta=eta,
               skip=skip, timesteps=timesteps, target=formulation.target,
               clip=formulation.space == "image", return_trajectory=return_trajectory,
               noise=noise, project=space_project)
  if return_trajectory:
    return formulation.to_image(out[0], prior), out[1]
  return formulation.to_image(out, prior)
