"""Package namespaces whose public names load on first use (PEP 562).

A package lists ``name -> module`` and gets a module ``__getattr__``: ``import neurop_jax.models``
or loading a config then imports only what it uses, not JAX, grain or Orbax.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any, Callable


def lazy_exports(package: str, exports: dict[str, str]
                 ) -> tuple[Callable[[str], Any], Callable[[], list[str]], list[str]]:
  """``(__getattr__, __dir__, __all__)`` of ``package``: ``exports[name]`` is the module that
  defines ``name``; it is imported the first time ``name`` is read, then cached on the package."""

  def __getattr__(name: str) -> Any:
    if name not in exports:
      raise AttributeError(f"module {package!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(exports[name]), name)
    setattr(sys.modules[package], name, value)
    return value

  def __dir__() -> list[str]:
    return sorted(set(vars(sys.modules[package])) | set(exports))

  return __getattr__, __dir__, sorted(exports)
