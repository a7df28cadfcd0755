"""Does phase 2 pay below `FINE_TUNE_MIN_PER_CLASS` (300) training images per class? `fine_tune` with the defaults of
`tl-course fit` (Lite0, the head fitted exactly, mirror averaging), once with phase 2 skipped (`epochs_fine=0`) and once
with it forced (`--epochs-fine`, 4 by default), for each seed, on each data set given; accuracy on the set's held-out
split (hymenoptera: val; aid10, dtd10: test). Prints one row per (set, seed) and, per set, the mean paired difference
(phase 2 minus phase 1) with a 95 % interval over the seeds (t distribution), and the images one point is.

    python bench/phase2.py [--data hymenoptera,dtd10,aid10] [--seeds 0,1,2] [--epochs-fine 4] [--json OUT]

Data sets come through `get_dataset` (TL_COURSE_DATA). The JSON report is written after each run, so a run stopped
at a time limit keeps what it had measured. About 30 minutes on 2 CPU cores for the three default sets.
"""
import argparse, json, os, time
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

import numpy as np
from scipy import stats

from tl_course.data import get_dataset, load_image_folder
from tl_course.train import fine_tune, FINE_TUNE_MIN_PER_CLASS

HELD_OUT = {'hymenoptera': 'val'}


def one_run(folder, split, epochs_fine, seed):
    t = time.perf_counter()
    run = fine_tune('efficientnet_lite0', (folder.files('train'), folder.labels('train')),
                    (folder.files(split), folder.labels(split)), folder.classes, epochs_fine=epochs_fine, seed=seed)
    return {'accuracy': run.metrics['accuracy'], 'seconds': round(time.perf_counter() - t, 1)}


def summary(rows):
    d = np.array([r['phase2'] - r['phase1'] for r in rows]) * 100
    half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d)) if len(d) > 1 else float('nan')
    return {'mean_difference_points': round(float(d.mean()), 2), 'interval95_points': [round(float(d.mean() - half), 2),
            round(float(d.mean() + half), 2)], 'seeds': len(d)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--data', default='hymenoptera,dtd10,aid10')
    ap.add_argument('--seeds', default='0,1,2')
    ap.add_argument('--epochs-fine', type=int, default=4)
    ap.add_argument('--json', default=None)
    a = ap.parse_args()
    report = {'threshold_per_class': FINE_TUNE_MIN_PER_CLASS, 'epochs_fine': a.epochs_fine, 'sets': {}}
    for name in a.data.split(','):
        folder = load_image_folder(get_dataset(name))
        split = HELD_OUT.get(name, 'test')
        counts = np.bincount(folder.labels('train'))
        entry = report['sets'][name] = {'split': split, 'n_train': int(counts.sum()), 'min_per_class': int(counts.min()),
                                        'n_held_out': len(folder.labels(split)), 'runs': []}
        for seed in map(int, a.seeds.split(',')):
            one, two = one_run(folder, split, 0, seed), one_run(folder, split, a.epochs_fine, seed)
            row = {'seed': seed, 'phase1': one['accuracy'], 'phase2': two['accuracy'],
                   'seconds_phase1': one['seconds'], 'seconds_phase2': two['seconds']}
            entry['runs'].append(row)
            print(f"{name:12s} seed {seed}: phase 1 only {row['phase1']:.2%}, with phase 2 {row['phase2']:.2%} "
                  f"({row['seconds_phase1']:.0f} s, {row['seconds_phase2']:.0f} s)", flush=True)
            entry.update(summary(entry['runs']))
            if a.json: json.dump(report, open(a.json, 'w'), indent=1)
        print(f"{name:12s} phase 2 - phase 1: {entry['mean_difference_points']:+.2f} points, 95 % interval "
              f"{entry['interval95_points']} over {entry['seeds']} seeds; one image is {100 / entry['n_held_out']:.2f} points",
              flush=True)
    return report


if __name__ == '__main__': main()
