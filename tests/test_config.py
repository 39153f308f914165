"""The training configs: suffixes, the paper's hyper-parameters, locked fields."""

import pathlib
import subprocess
import sys

import pytest
from absl import flags
from ml_collections import config_flags

from neurop_jax.training.config import PAPER_DIFFUSION_LRS, parse_arg

CONFIGS = pathlib.Path(__file__).resolve().parent.parent / "configs"


def _load(spec: str, *overrides: str):
  """The config of ``--config configs/<spec>`` (locked, as ``neurop_jax.main`` reads it)."""
  argv = ["prog", f"--config={CONFIGS / spec}", *overrides]
  values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "", flag_values=values, lock_config=True,
                                  sys_argv=argv)
  values(argv)
  return values.config


def test_parse_arg():
  assert parse_arg(None) == ("all", set())
  assert parse_arg("operator") == ("operator", set())
  assert parse_arg("test, diffusion", ("test",)) == ("diffusion", {"test"})
  with pytest.raises(ValueError, match="tset"):
    parse_arg("tset", ("test",))
  with pytest.raises(ValueError, match="at most one stage"):
    parse_arg("operator,diffusion")


@pytest.mark.parametrize("name", ["ucm", "aid", "rsscn7", "quickstart", "ucm_dev"])
@pytest.mark.parametrize("suffix, stage", [("", "all"), (":operator", "operator"),
                                           (":diffusion", "diffusion")])
def test_every_config_and_stage(name, suffix, stage):
  assert _load(f"{name}.py{suffix}").stage == stage


def test_ucm_is_the_papers_recipe():
  config = _load("ucm.py")
  assert config.model.unet.channel_mults == (1, 2, 2, 4, 4, 8)
  assert (config.data.operator_batch_size, config.data.patch_size) == (64, 32)
  assert (config.data.diffusion_batch_size, config.data.crop_size) == (10, 256)
  op = config.operator
  assert (op.epochs, op.warmup_epochs, op.learning_rate, op.warmup_multiplier) == (500, 50, 4e-5,
                                                                                  10.0)
  diff = config.diffusion
  assert (diff.num_steps, diff.learning_rate_every, diff.ema_decay) == (1_000_000, 100_000, 0.999)
  assert tuple(diff.learning_rates) == PAPER_DIFFUSION_LRS
  assert (diff.loss, diff.num_timesteps, diff.grad_clip) == ("l1", 2000, 0.0)


def test_quickstart_test_variant_is_micro():
  config = _load("quickstart.py:test,operator", "--config.operator.num_steps=3")
  assert config.model.unet.channel_mults == (1, 2, 4)
  assert (config.stage, config.operator.num_steps) == ("operator", 3)


def test_typo_names_the_field():
  with pytest.raises((AttributeError, KeyError), match="num_steps"):
    _load("quickstart.py", "--config.operator.num_stepz=3")


@pytest.mark.parametrize("name", ["ucm", "aid", "rsscn7"])
def test_paper_configs_validate_with_the_papers_sampler_and_keep_the_best_by_lpips(name):
  """The paper samples with DDIM, 50 uniform steps: its configs validate so, which is also what
  a trained run gives every entry point by default. Stage 2's best checkpoint is by LPIPS."""
  config = _load(f"{name}.py")
  diffusion = config.diffusion
  assert (diffusion.val_sampler, diffusion.val_steps, diffusion.val_skip) == ("ddim", 50, "uniform")
  assert (diffusion.best_metric, diffusion.best_mode) == ("lpips", "min")
  assert (config.operator.best_metric, config.operator.best_mode) == ("psnr", "max")


def test_loading_a_config_starts_no_stack():
  """A config is plain ml_collections: loading one imports neither JAX nor the evaluation,
  inference or training code (a fresh interpreter, since this one has them all)."""
  code = ("import importlib.util, sys; spec = importlib.util.spec_from_file_location('c', "
          f"{str(CONFIGS / 'ucm.py')!r}); module = importlib.util.module_from_spec(spec); "
          "spec.loader.exec_module(module); module.get_config(); "
          "print(' '.join(sorted(sys.modules)))")
  done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
  loaded = set(done.stdout.split())
  assert "neurop_jax.training.config" in loaded
  heavy = {"jax", "flax", "orbax", "grain", "tensorflow_datasets", "neurop_jax.evaluation.evaluate",
           "neurop_jax.inference", "neurop_jax.training.loop", "neurop_jax.models.neurop_diff"}
  assert not heavy & loaded, heavy & loaded
