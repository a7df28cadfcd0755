"""How `tl-course demo` chose its data and fine-tuning settings: on MNIST-5k (the data that ships with the install),
for each (labelled digits per class, recipe, seed), the head alone and the fine-tuned network's accuracy on the
demo's 1,000 test digits, beside the probe on the network's own 224-px features (stage 2). Recipes:

- `photo`: `fine_tune`'s defaults made for photos (the top of the network from the registry's cut, peak rate 1e-5,
  random crops and shifts), no mirror;
- `demo_3e-4`, `demo_1e-3`: every layer trained, no augmentation, peak rate 3e-4 or 1e-3.

Every run fine-tunes at 64 px for 8 epochs. Prints one row per run and, per (digits, recipe), the mean gain over the
probe with a 95 % interval over the seeds (t distribution). The JSON is written after each run.

    python bench/demo_settings.py [--per-class 20,50] [--recipes photo,demo_3e-4,demo_1e-3] [--seeds 0,1,2] [--json OUT]

About 20 minutes on 2 CPU cores with the defaults.
"""
import argparse, json, os, time
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

import numpy as np
from scipy import stats

from tl_course.demo import mnist_split, probe_gain
from tl_course.registry import get_backbone
from tl_course.train import fine_tune

RECIPES = {'photo': {}, 'demo_3e-4': dict(unfreeze='all', augment=False, fine_lr=3e-4),
           'demo_1e-3': dict(unfreeze='all', augment=False, fine_lr=1e-3)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--per-class', default='20,50'); ap.add_argument('--recipes', default=','.join(RECIPES))
    ap.add_argument('--seeds', default='0,1,2'); ap.add_argument('--json')
    a = ap.parse_args()
    rows, probes = [], {}
    for pc in map(int, a.per_class.split(',')):
        for seed in map(int, a.seeds.split(',')):
            d, train, test = mnist_split(pc, 1000, seed)
            probes[pc, seed] = float(np.mean(probe_gain(get_backbone('efficientnet_lite0'), d, train, test, seed)['features'] == d.y[test]))
            for name in a.recipes.split(','):
                t = time.perf_counter()
                run = fine_tune(get_backbone('efficientnet_lite0', input_size=64), (d.x[train], d.y[train]), (d.x[test], d.y[test]),
                                classes=d.classes, epochs_fine=8, mirror=False, cache=False, seed=seed, **RECIPES[name])
                rows.append({'per_class': pc, 'recipe': name, 'seed': seed, 'probe_224px': probes[pc, seed],
                             'head_alone_64px': run.history['val_accuracy'][0], 'fine_tuned_64px': run.metrics['accuracy'],
                             'seconds': round(time.perf_counter() - t, 1)})
                print(rows[-1], flush=True)
                if a.json: open(a.json, 'w').write(json.dumps({'rows': rows}, indent=1))
    summary = []
    for pc in sorted({r['per_class'] for r in rows}):
        for name in a.recipes.split(','):
            g = np.array([r['fine_tuned_64px'] - r['probe_224px'] for r in rows if r['per_class'] == pc and r['recipe'] == name])
            if len(g) == 0: continue
            half = stats.t.ppf(0.975, len(g) - 1) * g.std(ddof=1) / np.sqrt(len(g)) if len(g) > 1 else float('nan')
            summary.append({'per_class': pc, 'recipe': name, 'seeds': len(g), 'gain_over_probe_mean': float(g.mean()), 'ci95_half': float(half)})
            print(f'{pc:>3} per class, {name:<10} fine-tuned minus probe: {g.mean() * 100:+.1f} ± {half * 100:.1f} points over {len(g)} seeds')
    if a.json: open(a.json, 'w').write(json.dumps({'rows': rows, 'summary': summary}, indent=1))


if __name__ == '__main__': main()
