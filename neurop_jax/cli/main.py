"""Command line: flags only; the work is ``training.loop.train_and_evaluate`` or
``evaluation.evaluate.evaluate``.

  python -m neurop_jax.main --config configs/ucm.py --workdir runs/ucm
  python -m neurop_jax.main --config configs/ucm.py:operator --workdir runs/ucm \
      --config.operator.num_steps=20000
  python -m neurop_jax.main --mode evaluate --config configs/ucm.py --workdir runs/ucm

``--config.<field>=value`` overrides any field; the config is locked, so a misspelt field stops
the run with an error naming it. Bad data or settings (``errors.InputError``) print one line,
``error: <what and the fix>``, and exit with status 1.
"""

from __future__ import annotations

import sys

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


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing; a ``--config.<field>`` the config lacks exits with one line naming it.

  ml_collections raises a KeyError or AttributeError (not a flags error) for it, whose message
  holds the missing key and a "did you mean" suggestion.
  """
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


def run() -> None:
  """``python -m neurop_jax.main``: absl parses the flags, then ``main`` runs."""
  app.run(main, flags_parser=parse_flags)
