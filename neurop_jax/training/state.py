"""The train state of one stage (step, parameters, their EMA, Adam's state) and its optimizer."""

from __future__ import annotations

from typing import Any, Sequence

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import optax


@flax.struct.dataclass
class TrainState:
  """Everything a training step changes, a pytree (checkpointed whole).

  Attributes:
    step: int32 scalar, the number of steps taken.
    params: the trained parameters (the operator's in stage 1, the UNet's in stage 2).
    ema_params: their exponential moving average, what validation and sampling use.
    opt_state: the optimizer's state.
  """

  step: jax.Array
  params: Any
  ema_params: Any
  opt_state: optax.OptState


def create_train_state(params: Any, tx: optax.GradientTransformation) -> TrainState:
  """Step 0: the EMA starts at ``params``; call under jit so that its buffers are distinct."""
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    ema_params=jax.tree.map(jnp.copy, params), opt_state=tx.init(params))


def ema_update(ema: Any, params: Any, decay: float) -> Any:
  """``decay * ema + (1 - decay) * params`` leaf by leaf; decay 0 gives ``params``."""
  return jax.tree.map(lambda e, p: e * decay + (1.0 - decay) * p, ema, params)


def apply_gradients(state: TrainState, grads: Any, tx: optax.GradientTransformation,
                    ema_decay: float) -> TrainState:
  """One optimizer step and EMA update; the step count advances by one."""
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  return TrainState(step=state.step + 1, params=params,
                    ema_params=ema_update(state.ema_params, params, ema_decay),
                    opt_state=opt_state)


def warmup_schedule(learning_rate: float, multiplier: float, warmup_steps: int, num_steps: int,
                    decay: str) -> optax.Schedule:
  """SRNO's stage-1 rate: ``learning_rate`` rising linearly to ``learning_rate * multiplier``.

  Over ``warmup_steps`` (SRNO steps per epoch, we per step), then 'cosine' down to 0 at
  ``num_steps`` or 'constant' at the peak.
  """
  peak = learning_rate * multiplier
  rest = max(num_steps - warmup_steps, 1)
  after = {"cosine": lambda: optax.cosine_decay_schedule(peak, rest),
           "constant": lambda: optax.constant_schedule(peak)}
  if decay not in after:
    raise ValueError(f"unknown learning-rate decay {decay!r}: choose one of {tuple(after)}")
  if warmup_steps <= 0:
    return after[decay]()
  warm = optax.linear_schedule(learning_rate, peak, warmup_steps)
  return optax.join_schedules([warm, after[decay]()], [warmup_steps])


def step_schedule(values: Sequence[float], every: int) -> optax.Schedule:
  """Piecewise constant: ``values[k]`` for steps in ``[k * every, (k+1) * every)``, the last after."""
  table = jnp.asarray(values, jnp.float32)
  return lambda count: table[jnp.minimum(count // every, len(values) - 1)]


def make_optimizer(cfg: ml_collections.ConfigDict,
                   schedule: optax.Schedule) -> optax.GradientTransformation:
  """Adam at ``schedule`` (no weight decay), after clipping to ``cfg.grad_clip`` when above 0."""
  adam = optax.adam(schedule, b1=cfg.adam_b1, b2=cfg.adam_b2, eps=cfg.adam_eps)
  if cfg.grad_clip > 0:
    return optax.chain(optax.clip_by_global_norm(cfg.grad_clip), adam)
  return adam
