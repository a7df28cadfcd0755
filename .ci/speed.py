"""How fast this host is now: a fixed workload on one thread, timed. These shared machines change speed by up to three
times from one hour to the next (the same commit's CI took 640 s and 1,973 s), so `.ci/test` prints this before and
after its steps: two CI runs' seconds compare only as ratios to their own speed lines.

    python .ci/speed.py   prints 'host speed: ... s' (about 0.4 s on a quiet host; more is slower)"""
import os
for k in ('OMP_NUM_THREADS', 'OPENBLAS_NUM_THREADS', 'MKL_NUM_THREADS'): os.environ[k] = '1' # before NumPy loads BLAS
import time
import numpy as np


def workload() -> float:
    "Seconds for the best of three rounds of single-threaded float32 matrix products and an interpreted loop."
    rng = np.random.default_rng(0)
    a, b = rng.random((384, 384), np.float32), rng.random((384, 384), np.float32)
    best = float('inf')
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(400): a = (a @ b) / 384
        s = 0
        for i in range(3_000_000): s += i % 7
        best = min(best, time.perf_counter() - t)
    return best


if __name__ == '__main__': print(f'host speed: a fixed one-thread workload took {workload():.2f} s (best of three)')
