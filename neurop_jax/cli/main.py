"""Command line: flags only; the work is ``training.loop.train_and_evaluate`` or
``evaluation.evaluate.evaluate``.

  python -m neurop_jax.main --config configs/ucm.py --workdir runs/ucm
  python -m neurop_jax.main --config configs/ucm.py:operator --workdir runs/ucm \
      --config.operator.num_steps=20000
  python -m neurop_jax.main --mode evaluate --config configs/ucm.py --workdir runs/ucm

``--config.<field>=value`` overrides any field; the config is locked, so a misspelt field stops
the run with an error naming it. A config file that is missing, does not parse, has no
``get_config()`` or refuses its ``:suffix``, bad data or settings (``errors.InputError``) and
file-system errors (``OSError``: a workdir that cannot be written, a full disk) print one line,
``error: <what and the fix>``, and exit with status 1; usage mistakes exit with status 2.
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

from absl import app, flags
from ml_collections import config_flags

from neurop_jax.training import loop as train
from neurop_jax.errors import InputError

FLAGS = flags.FLAGS

flags.DEFINE_string("workdir", None, "Folder of checkpoints, logs and samples.")
flags.DEFINE_enum("mode", "train", ["train", "evaluate"], "Train (and resume), or evaluate.")
config_flags.DEFINE_config_file(
    "config", None, "Training config file, with an optional ':stage' suffix (operator, "
    "diffusion).", lock_config=True)
flags.mark_flags_as_required(["config", "workdir"])


def _config_value(argv: list[str]) -> str | None:
  """The value of ``--config`` in ``argv`` (``--config=X`` or ``--config X``), or None."""
  for i, arg in enumerate(argv):
    if arg.startswith("--config="):
      return arg.partition("=")[2]
    if arg == "--config" and i + 1 < len(argv):
      return argv[i + 1]
  return None


def check_config_file(spec: str) -> None:
  """Exits with one line unless ``spec`` (``path[:arg]``) names a Python file that parses and
  whose ``get_config(arg)`` accepts its argument (the config is built here once, as
  ml_collections will build it: a config file is plain Python without side effects)."""
  path, colon, arg = spec.partition(":")
  if not Path(path).is_file():
    sys.exit(f"error: --config {path}: no such file; give a config file such as configs/ucm.py")
  try:
    module = runpy.run_path(path)
  except SyntaxError as err:
    sys.exit(f"error: --config {path}, line {err.lineno}: {err.msg}; fix the config file")
  get_config = module.get("get_config")
  if not callable(get_config):
    sys.exit(f"error: --config {path} defines no get_config(): a config file returns its "
             "ml_collections.ConfigDict from get_config(arg=None)")
  try:
    get_config(*([arg] if colon else []))
  except ValueError as err:
    sys.exit(f"error: --config {spec}: {err}")


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, after ``check_config_file``; a ``--config.<field>`` the config lacks
  exits with one line naming it.

  ml_collections raises a KeyError or AttributeError (not a flags error) for it, whose message
  holds the missing key and a "did you mean" suggestion.
  """
  spec = _config_value(argv)
  if spec is not None:
    check_config_file(spec)
  try:
    return app.parse_flags_with_usage(argv)
  except (AttributeError, KeyError) as err:
    detail = err
    while isinstance(detail, BaseException):  # AttributeError(KeyError(message)) or KeyError.
      detail = detail.args[0] if detail.args else ""
    missing, _, suggestion = str(detail).partition("\n")
    named = [arg.split("=")[0] for arg in argv[1:] if arg.startswith("--config.")
             and f".{missing.strip(chr(39))}." in arg.split("=")[0] + "."]
    sys.exit(f"FATAL Flags parsing error: {', '.join(named) or 'a --config override'}: the "
             f"config has no field {missing}. {suggestion}".rstrip())


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  try:
    if FLAGS.mode == "train":
      train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
    else:
      from neurop_jax.evaluation import evaluate  # Only evaluation runs need the evaluation module.
      evaluate.evaluate(FLAGS.config, FLAGS.workdir)
  except InputError as err:
    sys.exit(f"error: {err}")
  except OSError as err:  # the file system refused: a permission, a full disk, a lost mount
    sys.exit(f"error: {err}; check --workdir and the paths of the config")


def run() -> None:
  """``python -m neurop_jax.main``: absl parses the flags, then ``main`` runs."""
  app.run(main, flags_parser=parse_flags)
