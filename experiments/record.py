"""Writing a benchmark's JSON record: atomically, so that an interrupted run keeps the old one."""

from __future__ import annotations

import json
import os
from pathlib import Path


def write_record(record: dict, out: str | os.PathLike, indent: int = 1) -> None:
  """Write ``record`` as JSON to ``out`` (folders made as needed) and say so."""
  out = Path(out)
  out.parent.mkdir(parents=True, exist_ok=True)
  tmp = out.with_name(f".{out.name}.tmp")
  tmp.write_text(json.dumps(record, indent=indent) + "\n")
  os.replace(tmp, out)
  print(f"wrote {out}")
