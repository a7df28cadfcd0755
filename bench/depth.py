"""How deep to fine-tune, near ImageNet and far from it (issue 22, lesson 13). `depth_experiment`: `fine_tune` with
the defaults of `tl-course fit` (Lite0, the head fitted exactly, mirror averaging, phase 2 at 1e-5 with warm-up and
cosine decay), with phase 2 unfreezing the network from four depths, and a control:

- none: phase 2 skipped (`epochs_fine=0`): the probe;
- classifier (the control): phase 2 runs, but trains only the new classifier (nothing of the network unfrozen);
- top: the last stage and the head's 1x1 convolution (after the second-last stage output, block14_add on Lite0);
- cut: from the registry's cut layer on (block10_add on Lite0), `fit`'s default;
- all: every layer (BatchNorm stays frozen, as at every depth).

For each seed, each data set and each depth, accuracy on the set's held-out split (hymenoptera: val; the others:
test). Prints one row per run and, per set and depth, the mean accuracy and the mean paired difference with `none`
(the same seed) with a 95 % interval over the seeds (t distribution), and what one image is worth.

    python bench/depth.py [--data hymenoptera,dtd10] [--seeds 0,1,2] [--depths none,classifier,top,cut,all] [--epochs-fine 4] [--json OUT]

Runs go seed by seed (every set and depth of seed 0 first). The JSON report is written after each run, and the runs
already in it are not run again, so a run stopped at a time limit goes on where it stopped. Data sets come through
`get_dataset` (TL_COURSE_DATA). About 70 minutes on 2 CPU cores for the defaults; lesson 13 reads
`bench/results/depth.json`.
"""
import argparse, os
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

from tl_course.data import get_dataset, load_image_folder
from tl_course.depth import DEPTHS, depth_experiment


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--data', default='hymenoptera,dtd10')
    ap.add_argument('--seeds', default='0,1,2')
    ap.add_argument('--depths', default=','.join(DEPTHS))
    ap.add_argument('--epochs-fine', type=int, default=4)
    ap.add_argument('--json', default=None)
    a = ap.parse_args()
    folders = {name: load_image_folder(get_dataset(name)) for name in a.data.split(',')}
    def show(name, r, run):
        print(f"{name:12s} seed {r['seed']} {r['depth']:5s}: {r['accuracy']:.2%} (train {r['train_accuracy_last']:.2%}, "
              f"{r['trainable_weights']:,} weights trained, {r['seconds']:.0f} s)", flush=True)
    report = depth_experiment(folders, [int(s) for s in a.seeds.split(',')], a.depths.split(','),
                              epochs_fine=a.epochs_fine, json_path=a.json, on_run=show)
    for name, entry in report['sets'].items():
        for depth, s in entry['summary'].items():
            gain = (f", minus none {s['minus_none_points']:+.2f} points ({s['interval95_points'][0]:+.2f} to "
                    f"{s['interval95_points'][1]:+.2f})" if 'minus_none_points' in s else '')
            print(f"{name:12s} {depth:5s}: {s['mean_accuracy']:.2%} over seeds {s['seeds']}{gain}; "
                  f"one image is {100 / entry['n_held_out']:.2f} points", flush=True)
    return report


if __name__ == '__main__': main()
