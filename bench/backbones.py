"""Lite0 inference speed on this machine: a compiled `model(x, training=False)` against `model.predict`
(one call over all images, and one call per batch).

Both run in one process on the same 320 preprocessed photos at batch 32, in interleaved rounds; the best round of
each is kept and the ratio is printed (on shared machines absolute numbers drift, ratios hold).

    python bench/backbones.py [--images 320] [--batch 32] [--rounds 5] [--size 224]
"""
import argparse, os, time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

import numpy as np
import keras

from tl_course.backbones import efficientnet_lite0, predict_batches, preprocess_input
from tl_course.data import bundled_photos, resize_center_crop


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--images', type=int, default=320)
    ap.add_argument('--batch', type=int, default=32)
    ap.add_argument('--rounds', type=int, default=5)
    ap.add_argument('--size', type=int, default=224)
    a = ap.parse_args()
    photos = [resize_center_crop(p, a.size) for p in bundled_photos().values()]
    x = preprocess_input(np.stack([photos[i % len(photos)] for i in range(a.images)]), 'tf')
    model = efficientnet_lite0(input_shape=(a.size, a.size, 3))
    runs = {'compiled call': lambda: predict_batches(model, x, batch_size=a.batch),
            'model.predict': lambda: model.predict(x, batch_size=a.batch, verbose=0),
            'predict per batch': lambda: np.concatenate([model.predict(x[i:i + a.batch], verbose=0)
                                                         for i in range(0, len(x), a.batch)])}
    outs = {k: f() for k, f in runs.items()}  # warm-up: tracing and compilation are not timed
    for k in runs: np.testing.assert_allclose(outs['compiled call'], outs[k], atol=1e-4)
    times = {k: [] for k in runs}
    for _ in range(a.rounds):
        for k, f in runs.items():
            t0 = time.perf_counter(); f(); times[k].append(time.perf_counter() - t0)
    best = {k: min(v) for k, v in times.items()}
    ratio = lambda k: np.array(times[k]) / np.array(times['compiled call'])
    print(f'EfficientNet-Lite0, {a.size}px, batch {a.batch}, {a.images} images, backend {keras.backend.backend()}, '
          f'{os.cpu_count()} CPUs, best of {a.rounds} rounds')
    for k, t in best.items():
        print(f'  {k:<18} {a.images / t:7.1f} images/s  {1000 * t / a.images:6.2f} ms/image')
    for k in ('model.predict', 'predict per batch'):
        print(f'  compiled call vs {k}: {best[k] / best["compiled call"]:.2f}x faster (best rounds), '
              f'{np.median(ratio(k)):.2f}x (median of the per-round ratios)')


if __name__ == '__main__':
    main()
