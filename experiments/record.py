"""Writing a benchmark's JSON record: atomically, so that an interrupted run keeps the old one."""

from __future__ import annotations

import json
import os

from neurop_jax.io.atomic import write_text


def write_record(record: dict, out: str | os.PathLike, indent: int = 1) -> None:
  """Write ``record`` as JSON to ``out`` (folders made as needed) and say so."""
  write_text(out, json.dumps(record, indent=indent) + "\n")
  print(f"wrote {out}")
