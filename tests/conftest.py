"""Shared test helpers: the parity fixtures of the original PyTorch model, a trained workdir.

``micro`` is copied into tests/fixtures so a fresh clone has it; ``tiny`` (the paper's exact
operator, 25 MB) is read from ../shared/fixtures beside the checkout, which CI provides.
``trained_workdir`` trains ``trained_config()`` (``configs/quickstart.py:test``, both stages, 3
steps each) once per session, in-process, for the tests that need checkpoints: it is also the
uninterrupted run that resumed runs are compared with bit for bit. The tests that use it are
marked slow.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import os
import pathlib
import shutil
import tempfile

# One persistent XLA compilation cache for the session, set before JAX starts: the subprocesses
# (command-line runs, notebook kernels) and the tests compile the same small programs again.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  _XLA_CACHE = tempfile.mkdtemp(prefix="neurop_jax_test_xla_cache_")
  atexit.register(shutil.rmtree, _XLA_CACHE, ignore_errors=True)
  os.environ.update(JAX_COMPILATION_CACHE_DIR=_XLA_CACHE, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                    JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")

# The suite is compile-bound (small models, a few steps each), so it compiles with LLVM's
# optimisation level 0: about half the compile time, slower only in run time. The arithmetic is
# IEEE float32 at every level (fast-math stays off); only the order of long float32 sums may
# differ (a last-bit effect: every tolerance here holds at both levels, the parity tests' too).
# A caller's XLA_FLAGS that already set the level are kept.
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                             " --xla_backend_optimization_level=0").strip()

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from neurop_jax.models.convert import convert_operator, convert_unet, read_state_dict
from neurop_jax.models import model_config

ROOT = pathlib.Path(__file__).resolve().parent
CONFIGS = ROOT.parent / "configs"
FIXTURE_DIRS = {
    "micro": ROOT / "fixtures" / "micro",
    "tiny": ROOT.parent.parent / "shared" / "fixtures" / "tiny",
}


def _require(name: str) -> pathlib.Path:
  """The folder of fixture ``name``; skips the test where it is absent (tiny lives in ../shared)."""
  if not FIXTURE_DIRS[name].exists():
    pytest.skip(f"{FIXTURE_DIRS[name]} is absent (the tiny fixture lives in ../shared)")
  return FIXTURE_DIRS[name]


def load_io(name: str) -> dict[str, np.ndarray]:
  """The reference arrays ``io.npz`` of fixture ``name`` (NCHW as the original wrote them)."""
  with np.load(_require(name) / "io.npz") as io:
    return {k: io[k] for k in io.files}


def nhwc(a: np.ndarray) -> np.ndarray:
  """An NCHW (or ``(..., C, H, W)``) array as NHWC."""
  return np.moveaxis(a, -3, -1)


class Fixture:
  """One fixture folder: the reference arrays (NHWC) and converted parameters."""

  def __init__(self, name: str):
    self.name = name
    self.dir = FIXTURE_DIRS[name]
    self.cfg = model_config(name)
    self.io = load_io(name)
    self.operator_params = convert_operator(read_state_dict(self.dir / "srno_state.npz"), self.cfg)
    self.unet_params = convert_unet(read_state_dict(self.dir / "unet_state.npz"), self.cfg)

  def image(self, key: str) -> jnp.ndarray:
    """An NCHW image array of io.npz as NHWC."""
    return jnp.asarray(nhwc(self.io[key]))

  @property
  def params(self) -> dict:
    return {"params": {"operator": self.operator_params["params"],
                       "unet": self.unet_params["params"]}}


_CACHE: dict[str, Fixture] = {}


def load_fixture(name: str) -> Fixture:
  _require(name)
  if name not in _CACHE:
    _CACHE[name] = Fixture(name)
  return _CACHE[name]


@pytest.fixture(params=["micro", "tiny"], scope="session")
def fixture(request) -> Fixture:
  """Each parity fixture in turn; tiny is skipped only where ../shared is absent."""
  return load_fixture(request.param)


def bfloat16_twin(cfg):
  """A copy of the model config ``cfg`` that computes in bf16 (parameters stay float32)."""
  twin = cfg.copy_and_resolve_references()
  twin.dtype = "bfloat16"
  return twin


_LOWERINGS: list[str] = []
jax.monitoring.register_event_duration_secs_listener(
    lambda event, _secs, **_: _LOWERINGS.append(event)
    if event == "/jax/core/compile/jaxpr_to_mlir_module_duration" else None)


def lowerings() -> int:
  """Programs lowered so far in this process (jit cache misses)."""
  return len(_LOWERINGS)


@contextlib.contextmanager
def no_transfers_or_compiles():
  """Runs the block under ``jax.transfer_guard('disallow')``, where an implicit copy between host
  and device raises (``jax.device_put`` and ``jax.device_get`` are explicit and pass), and fails
  the test if the block lowers a new program: a jit cache miss, whether XLA then compiles it or
  finds it in the persistent compilation cache."""
  before = len(_LOWERINGS)
  with jax.transfer_guard("disallow"):
    yield
  assert len(_LOWERINGS) == before, f"{len(_LOWERINGS) - before} new programs compiled"


def max_abs_diff(a, b) -> float:
  return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def rel_err(actual, reference: np.ndarray) -> float:
  """max |actual - reference| relative to max |reference|."""
  return max_abs_diff(actual, reference) / float(np.max(np.abs(reference)))


def load_config(name: str, arg: str | None = None):
  """``get_config(arg)`` of ``configs/<name>.py``, unlocked (``--config configs/<name>.py:arg``)."""
  spec = importlib.util.spec_from_file_location(f"configs_{name}", CONFIGS / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


TRAINED_STEPS = 3
"""Steps of each stage in ``trained_workdir``: validated and checkpointed at 2 and 3 (keep=2)."""


def trained_config(arg: str = "test"):
  """``configs/quickstart.py:<arg>`` with ``TRAINED_STEPS`` steps per stage: ``trained_workdir``'s
  config (``--config.operator.num_steps=3 --config.diffusion.num_steps=3`` on the command line),
  its training steps under ``jax.transfer_guard('disallow')`` (``config.transfer_guard``): every
  in-process training of the suite fails on an implicit host-device copy in its step loop."""
  config = load_config("quickstart", arg)
  config.operator.num_steps = config.diffusion.num_steps = TRAINED_STEPS
  config.transfer_guard = "disallow"
  return config


@pytest.fixture(scope="session")
def trained_workdir(tmp_path_factory) -> pathlib.Path:
  """A workdir with both stages of ``trained_config()`` trained without interruption (about a
  minute on CPU).

  Shared by the session: copy it before writing into it.
  """
  from neurop_jax.training import loop as train

  workdir = tmp_path_factory.mktemp("quickstart_test")
  train.train_and_evaluate(trained_config(), workdir)
  return workdir


def pytest_collection_modifyitems(items):
  """A test that needs ``trained_workdir`` (a training run) is slow: ``-m "not slow"`` leaves it."""
  for item in items:
    if "trained_workdir" in getattr(item, "fixturenames", ()):
      item.add_marker(pytest.mark.slow)
