"""``python -m neurop_jax.main``: train or evaluate (the flags are ``neurop_jax.cli.main``'s)."""

from neurop_jax.cli.main import run

if __name__ == "__main__":
  run()
