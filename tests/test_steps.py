"""Train steps: several steps per call with rng fold_in(step), donation, a 2-device mesh, and bf16
compute against float32."""

import functools
import json
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import bfloat16_twin, load_fixture
from neurop_jax.inference.run import paper_schedule
from neurop_jax.models import make_model
from neurop_jax.models.coords import query_grid
from neurop_jax.training.state import TrainState, apply_gradients, create_train_state
from neurop_jax.training.steps import (batch_sharding, compile_steps, data_mesh, diffusion_step,
                                       operator_step, to_device)

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _toy_step(state, batch, rng):
  """Least squares on ``batch['x']``; the metrics record the rng each step received."""
  loss_fn = lambda p: jnp.mean((batch["x"] @ p["w"] - 1.0) ** 2)
  loss, grads = jax.value_and_grad(loss_fn)(state.params)
  metrics = {"loss": loss, "draw": jax.random.uniform(rng)}
  return apply_gradients(state, grads, optax.sgd(0.1), 0.5), metrics


def _toy_state() -> TrainState:
  return jax.jit(lambda: create_train_state({"w": jnp.zeros(3)}, optax.sgd(0.1)))()


def test_steps_per_call_equal_single_steps():
  mesh = data_mesh()
  run = compile_steps(_toy_step, mesh)
  x = np.random.default_rng(0).standard_normal((3, 2, 4, 3)).astype(np.float32)
  rng = jax.random.key(7)
  stacked = batch_sharding(mesh, stacked=True)

  state = _toy_state()
  first = state.params["w"]
  three, metrics = run(state, to_device({"x": x}, stacked), rng, np.int32(3))
  assert first.is_deleted() == (jax.default_backend() != "cpu")  # donated on accelerators
  state = _toy_state()
  for n in range(3):
    state, single = run(state, to_device({"x": x[n:n + 1]}, stacked), rng, np.int32(1))
    np.testing.assert_allclose(single["loss"], metrics["loss"][n:n + 1], rtol=1e-6)
  np.testing.assert_allclose(state.params["w"], three.params["w"], rtol=1e-6)
  np.testing.assert_allclose(state.ema_params["w"], three.ema_params["w"], rtol=1e-6)
  assert int(three.step) == 3
  draws = [jax.random.uniform(jax.random.fold_in(rng, n)) for n in range(3)]
  np.testing.assert_array_equal(metrics["draw"], draws)


def test_a_count_below_k_trains_on_the_first_batches_only():
  """``count`` = 2 of 3 stacked batches: the state equals two steps' exactly (the third step is
  computed and discarded), in the program of 3 steps."""
  mesh = data_mesh()
  run = compile_steps(_toy_step, mesh)
  stacked = batch_sharding(mesh, stacked=True)
  x = np.random.default_rng(1).standard_normal((3, 2, 4, 3)).astype(np.float32)
  rng = jax.random.key(7)
  two, _ = run(_toy_state(), to_device({"x": x}, stacked), rng, np.int32(2))
  reference, _ = run(_toy_state(), to_device({"x": x[:2]}, stacked), rng, np.int32(2))
  assert int(two.step) == 2
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(two), jax.device_get(reference))
  three, _ = run(_toy_state(), to_device({"x": x}, stacked), rng, np.int32(3))
  assert not np.array_equal(three.params["w"], two.params["w"])


_TWO_DEVICES = r"""
import functools, json
import jax, jax.numpy as jnp, numpy as np
from neurop_jax.training.config import base_config
from neurop_jax.diffusion.schedule import schedule_from_config
from neurop_jax.models import make_model
from neurop_jax.models.coords import query_grid
from neurop_jax.training.state import create_train_state, make_optimizer, step_schedule
from neurop_jax.training.steps import (batch_sharding, compile_steps, data_mesh, diffusion_step,
                                       operator_step, replicated, to_device)

assert jax.device_count() == 2
config = base_config("micro")
config.model.unet.update(channel_mults=(1, 2), attn_res=(8,), image_size=16)
model = make_model(config.model)
rng = np.random.default_rng(0)
schedule = step_schedule((1e-3,), 10)
# Adam's eps raised: at |grad| ~ 1e-8 its update is ill-conditioned in the reduction order.
config.diffusion.adam_eps = 1e-4
tx = make_optimizer(config.diffusion, schedule)

def random_params(init):
  shapes = jax.eval_shape(init, jax.random.key(0))
  return jax.tree.map(lambda s: (0.1 * rng.standard_normal(s.shape)).astype(np.float32), shapes)

coord, cell = query_grid(4, (8, 8))
x16 = jnp.zeros((1, 16, 16, 3))
stages = {
    "operator": (
        random_params(lambda r: model.init(r, jnp.zeros((1, 8, 8, 3)), coord[:1], cell[:1],
                                           method=model.prior)["params"]["operator"]),
        functools.partial(operator_step, model=model, tx=tx, schedule=schedule, ema_decay=0.9),
        dict(lr=rng.random((2, 4, 8, 8, 3)), coord=np.stack([coord] * 2),
             cell=np.stack([cell] * 2), gt=rng.random((2, 4, 8, 8, 3)))),
    "diffusion": (
        random_params(lambda r: model.init(r, x16, jnp.ones((1,)), x16,
                                           method=model.denoise)["params"]["unet"]),
        functools.partial(diffusion_step, model=model, tx=tx, schedule=schedule, ema_decay=0.9,
                          noise=schedule_from_config(config.diffusion), loss="l1",
                          per_sample_t=False),
        dict(hr=rng.random((2, 4, 16, 16, 3)), prior=rng.uniform(-1, 1, (2, 4, 16, 16, 3)))),
}
diffs = {}
for name, (params, step, batch) in stages.items():
  results = []
  for mesh in (data_mesh(jax.devices()[:1]), data_mesh()):
    state = jax.jit(lambda p: create_train_state(p, tx), out_shardings=replicated(mesh))(params)
    arrays = to_device({k: np.asarray(v, np.float32) for k, v in batch.items()},
                       batch_sharding(mesh, stacked=True))
    state, metrics = compile_steps(step, mesh)(state, arrays, jax.random.key(3), np.int32(1))
    results.append((jax.device_get((state.params, state.ema_params)), jax.device_get(metrics),
                    len(arrays[next(iter(arrays))].sharding.device_set)))
  (one, one_m, one_n), (two, two_m, two_n) = results
  diffs[name] = dict(
      devices=[one_n, two_n],
      params=max(float(np.max(np.abs(a - b))) for a, b in zip(jax.tree.leaves(one),
                                                           jax.tree.leaves(two))),
      loss=float(np.max(np.abs(one_m["loss"] - two_m["loss"]) / np.abs(one_m["loss"]))),
      grad_norm=float(np.max(np.abs(one_m["grad_norm"] - two_m["grad_norm"])
                             / one_m["grad_norm"])))
print(json.dumps(diffs))
"""


@pytest.mark.slow  # a process of its own that compiles both stages' steps twice: about 30 s
def test_two_device_mesh_matches_one_device():
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=" ".join(
      [os.environ.get("XLA_FLAGS", ""), "--xla_force_host_platform_device_count=2"]).strip())
  result = subprocess.run([sys.executable, "-c", _TWO_DEVICES], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  diffs = json.loads(result.stdout.strip().splitlines()[-1])
  for name, diff in diffs.items():
    assert diff["devices"] == [1, 2], name
    assert diff["params"] < 1e-6, (name, diff)
    assert diff["loss"] < 1e-5 and diff["grad_norm"] < 1e-5, (name, diff)


def test_python_number_metrics_become_arrays():
  """A constant learning-rate schedule returns a Python float; one step per call still stacks it."""
  def step(state, batch, rng):
    new_state, metrics = _toy_step(state, batch, rng)
    return new_state, {**metrics, "lr": optax.constant_schedule(0.1)(state.step)}

  mesh = data_mesh()
  x = np.ones((1, 2, 4, 3), np.float32)
  _, metrics = compile_steps(step, mesh)(_toy_state(), to_device({"x": x}, batch_sharding(
      mesh, stacked=True)), jax.random.key(0), np.int32(1))
  assert metrics["lr"].shape == (1,)
  np.testing.assert_allclose(metrics["lr"], [0.1])


@pytest.mark.parametrize("stage", ["operator", "diffusion"])
def test_bfloat16_train_step_tracks_float32(stage):
  """One SGD step of each stage with bf16 compute (float32 parameters) against float32, from the
  same parameters, batch and rng: the loss within 2%, the gradient within 5% of its norm (cosine
  above 0.998). SGD, so that the parameter update is the gradient itself."""
  fx = load_fixture("micro")
  rng = np.random.default_rng(0)
  tx, schedule = optax.sgd(1e-2), optax.constant_schedule(1e-2)
  if stage == "operator":
    coord, cell = query_grid(2, (16, 16))
    batch = dict(lr=rng.random((2, 8, 8, 3)), coord=coord, cell=cell,
                 gt=rng.random((2, 16, 16, 3)))
    step, params = operator_step, fx.operator_params["params"]
  else:
    batch = dict(hr=rng.random((2, 32, 32, 3)), prior=rng.uniform(-1, 1, (2, 32, 32, 3)))
    step, params = functools.partial(diffusion_step, noise=paper_schedule(), loss="l1",
                                     per_sample_t=False), fx.unet_params["params"]
  batch = {k: jnp.asarray(v, jnp.float32) for k, v in batch.items()}
  results = []
  for cfg in (fx.cfg, bfloat16_twin(fx.cfg)):
    run = jax.jit(functools.partial(step, model=make_model(cfg), tx=tx, schedule=schedule,
                                    ema_decay=0.9))
    state, metrics = run(create_train_state(params, tx), batch, jax.random.key(3))
    update = jax.tree.map(lambda new, old: np.asarray(old - new, np.float64), state.params, params)
    results.append((float(metrics["loss"]), np.concatenate([u.ravel() for u in
                                                           jax.tree.leaves(update)])))
  (loss32, grad32), (loss16, grad16) = results
  assert loss16 != loss32  # really computed in bf16
  assert abs(loss16 - loss32) <= 0.02 * abs(loss32), (loss16, loss32)
  error = np.linalg.norm(grad16 - grad32) / np.linalg.norm(grad32)
  assert error <= 0.05, error
