"""Time and peak memory of ADSH's database-code (V) update at a real database size.

    python bench/adsh_update.py [--num_database=193734] [--num_samples=2000] [--bits=48]
                                [--num_classes=21] [--whole]

After every outer iteration ADSH updates the N x K database codes V from the m sampled
items' outputs U and the m x N similarity S between the sample and the database
(wsdhash/losses/adsh.py). The defaults are NUS-WIDE's size in the ADSH protocol (193,734
database items, 21 concepts) and the authors' m and a common code length. The update
computes S^T U over blocks of database rows (`similarity_products`), so S is never held
whole; `--whole` also runs the former path (S built as one m x N matrix, then
`dcc_update`), checks that both give the same V and reports its time and peak.

Time is one update's wall time; memory is the peak of Python's and numpy's allocations
during a second, traced update (tracemalloc, which numpy reports to), over what was
allocated before it. Labels are random
multi-label rows (each concept with probability 0.15), U is tanh of normal noise: the
time and memory of the update do not depend on the values.
"""

from __future__ import annotations

import os
import time
import tracemalloc

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import machine_info  # noqa: E402  (bench/ is on the path)
import numpy as np  # noqa: E402
import results  # noqa: E402
from absl import app, flags  # noqa: E402

_N = flags.DEFINE_integer("num_database", 193734, "Database items N.")
_M = flags.DEFINE_integer("num_samples", 2000, "Sampled items m.")
_BITS = flags.DEFINE_integer("bits", 48, "Code length K.")
_CLASSES = flags.DEFINE_integer("num_classes", 21, "Label columns.")
_WHOLE = flags.DEFINE_bool("whole", False, "Also run the former whole-S update, compared.")


def _measured(function):
    """(result, seconds, peak MiB above the start) of `function()`: timed in one call,
    its memory traced in a second one (tracing slows allocations)."""
    started = time.perf_counter()
    result = function()
    seconds = time.perf_counter() - started
    tracemalloc.start()
    start, _ = tracemalloc.get_traced_memory()
    function()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return result, seconds, (peak - start) / 2**20


def main(argv):
    del argv
    from wsdhash.losses import adsh

    print(machine_info.describe())
    n, m, bits = _N.value, _M.value, _BITS.value
    rng = np.random.default_rng(0)
    labels = (rng.random((n, _CLASSES.value)) < 0.15).astype(np.float32)
    rows = rng.choice(n, size=m, replace=False)
    u = np.tanh(rng.normal(size=(m, bits))).astype(np.float32)
    v = np.where(rng.random((n, bits)) < 0.5, -1.0, 1.0).astype(np.float32)
    gamma = 200.0

    def blocked():
        products = adsh.similarity_products(labels[rows], labels, u)
        return adsh.dcc_update_from_products(v, u, rows, products, gamma)

    new, seconds, peak = _measured(blocked)
    print(f"ADSH V update: N={n}, m={m}, K={bits}, {_CLASSES.value} label columns")
    print(
        f"  blocked S^T U ({adsh.BLOCK_ITEMS} rows a block)   {seconds:6.2f} s   "
        f"peak {peak:8.0f} MiB"
    )
    print(
        f"  (V itself: {v.nbytes / 2**20:.0f} MiB float32; S whole would be "
        f"{m * n * 8 / 2**20:.0f} MiB float64)"
    )
    results.record("adsh_update", "V update time", seconds, "s", f"N={n} m={m} K={bits}")
    results.record("adsh_update", "V update peak memory", peak, "MiB", f"N={n} m={m} K={bits}")
    if _WHOLE.value:

        def whole():
            s = adsh.similarity_matrix(labels[rows], labels)
            return adsh.dcc_update(v, u, rows, s, gamma)

        former, seconds, peak = _measured(whole)
        same = float(np.mean(former == new))
        print(
            f"  whole S (the former path)             {seconds:6.2f} s   "
            f"peak {peak:8.0f} MiB   same V: {same:.6%} of entries"
        )


if __name__ == "__main__":
    app.run(main)
