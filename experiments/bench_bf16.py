"""bf16 attention on the CPU: three forms of softmax(q k^T / sqrt(c)) v against float32, in one run.

  python experiments/bench_bf16.py [--repeats 3]

q, k, v ``(1, N, c)`` standard normal times 2, rounded to bf16; the reference is the float32
computation on those same rounded values, so the error is the computation's, not the inputs'.
The forms (each jitted, bf16 operands):
- ``bf16_result``: logits as a bf16 einsum, softmax in float32, the weighted sum a bf16 einsum
  (the UNet's attention before issue 22);
- ``f32_logits``: logits with ``preferred_element_type=float32``, scaled and normalised in float32,
  the weighted sum a bf16 einsum (``models.unet.SelfAttention`` now);
- ``f32_logits_and_sum``: as ``f32_logits`` with the weighted sum's result float32 too;
- ``dot_product_attention``: ``jax.nn.dot_product_attention`` (XLA implementation).
Reports the max and mean absolute error and the median time of ``--repeats`` calls. Writes
experiments/results/bench_bf16.json.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from record import write_record

SIZES = ((1024, 256), (4096, 256), (16384, 64))


def attention(f32_logits: bool, f32_sum: bool):
  """softmax(q k^T / sqrt(c)) v of ``(1, N, c)`` arrays, in the form the flags name."""

  def fn(q, k, v):
    c = q.shape[-1]
    logits = jnp.einsum("bqc,bkc->bqk", q, k,
                        preferred_element_type=jnp.float32 if f32_logits else None)
    attn = jax.nn.softmax(logits.astype(jnp.float32) / np.float32(math.sqrt(c)), axis=-1)
    out = jnp.einsum("bqk,bkc->bqc", attn.astype(q.dtype), v,
                     preferred_element_type=jnp.float32 if f32_sum else None)
    return out.astype(q.dtype)

  return fn


FORMS = {
    "bf16_result": attention(False, False),
    "f32_logits": attention(True, False),
    "f32_logits_and_sum": attention(True, True),
    "dot_product_attention": lambda q, k, v: jax.nn.dot_product_attention(
        q[:, :, None], k[:, :, None], v[:, :, None])[:, :, 0],
}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--out", default="experiments/results/bench_bf16.json")
  args = parser.parse_args()
  results = {}
  for n, c in SIZES:
    keys = jax.random.split(jax.random.key(n), 3)
    q, k, v = (jax.random.normal(key, (1, n, c)).astype(jnp.bfloat16) * 2 for key in keys)
    reference = jax.jit(attention(True, True))(*(a.astype(jnp.float32) for a in (q, k, v)))
    for name, form in FORMS.items():
      fn = jax.jit(form)
      out = fn(q, k, v).block_until_ready()
      times = []
      for _ in range(args.repeats):
        start = time.perf_counter()
        fn(q, k, v).block_until_ready()
        times.append(time.perf_counter() - start)
      error = jnp.abs(out.astype(jnp.float32) - reference)
      row = {"max_abs_err": float(error.max()), "mean_abs_err": float(error.mean()),
             "median_ms": round(1e3 * statistics.median(times), 2)}
      results[f"N{n}_c{c}/{name}"] = row
      print(f"N={n:6d} c={c:4d} {name:22s} max {row['max_abs_err']:.4f} "
            f"mean {row['mean_abs_err']:.5f} {row['median_ms']:9.1f} ms")
  write_record({"backend": jax.default_backend(), "repeats": args.repeats,
                "note": "errors against float32 on the same bf16-rounded inputs",
                "results": results}, args.out)


if __name__ == "__main__":
  main()
