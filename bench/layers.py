"""Which of a network's stage outputs to read features from, measured on every data set of the suite (issue 22).

For each set, one pass of Lite0 pools the output of each of its stages (`stage_outputs`) next to the head's features
(averaged with the mirror image's, as the probe's defaults; not for MNIST-5k, as `bench/suite.py`). Then, each fitted
on the training split, its choices made by 5-fold cross-validation on it, and measured once on the held-out split:

- the layer-transferability curve: a probe on each stage's pooled output alone, and on the head's;
- strategies for the probe's default, each choosing by cross-validation accuracy on train only:
  `head` (no choice), `head|cut` (head, or head + the cut layer: the defaults until now), `greedy-1` (head, or head +
  the one stage that CV likes best), `greedy-2` (then one more stage, if CV prefers it), `all` (head + every stage).

    python bench/layers.py [--sets hymenoptera,cifar10_subset,mnist5k,aid10,dtd10] [--per-class N] [--json OUT]

`--per-class N` keeps at most N training and N held-out images per class (the first N of each class in file order, a
fixed draw): CIFAR-10's 5,000 / 10,000 and MNIST-5k's 4,000 / 1,000 take most of an hour of fits otherwise, since
each of the about 23 probes runs 5-fold cross-validation over 9 values of C.

Features are cached (TL_COURSE_CACHE): the first run extracts every set once (about 25 min on 2 CPU cores, most of it
CIFAR-10's 15,000 images); a second takes the fits' time only.
"""
import argparse, json, os, tempfile, time
from pathlib import Path
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

import numpy as np

from tl_course.data import get_dataset, load_image_folder
from tl_course.features import extract_features, fit_probe, cv_accuracy
from tl_course.domains import small_split
from tl_course.probe import eval_split, feature_columns
from tl_course.registry import get_backbone, stage_outputs
from suite import SETS, mnist_folder


def one_set(name, folder, bb, mirror, stages, log, per_class=None):
    t = time.perf_counter()
    split = eval_split(folder)
    if per_class: folder = small_split(folder, per_class, per_class)
    ex = dict(mirror=mirror, progress=True, extra_layers=tuple(stages))
    xtr, xte = extract_features(bb, folder.files('train'), **ex), extract_features(bb, folder.files(split), **ex)
    ytr, yte = folder.labels('train'), folder.labels(split)
    cols = feature_columns(bb, tuple(stages))
    memo = {}
    def score(names):
        "CV accuracy on train and accuracy on the held-out split of a probe on these blocks' columns."
        key = tuple(names)
        if key not in memo:
            c = np.concatenate([cols[n] for n in names])
            pipe = fit_probe(xtr[:, c], ytr)
            memo[key] = (cv_accuracy(pipe), float(np.mean(pipe.predict(xte[:, c]) == yte)))
            log(f'  {name}: {"+".join(names):<40} cv {memo[key][0]:.1%}  test {memo[key][1]:.1%}')
        return memo[key]
    curve = {n: score([n]) for n in ['head'] + list(stages)}
    def best(options): # CV on train decides; a tie keeps the earlier (simpler) option
        return max(options, key=lambda o: score(o)[0])
    g1 = best([['head']] + [['head', s] for s in stages])
    g2 = best([g1] + [g1 + [s] for s in stages if s not in g1]) if len(g1) > 1 else g1
    strategies = {'head': ['head'], 'head|cut': best([['head'], ['head', bb.cut_layer]]), 'greedy-1': g1, 'greedy-2': g2,
                  'all': ['head'] + list(stages)}
    return {'set': name, 'per_class_cap': per_class, 'n_train': len(ytr), 'n_test': len(yte), 'mirror': mirror, 'one_image': 1 / len(yte),
            'curve': {n: {'cv': cv, 'test': te} for n, (cv, te) in curve.items()},
            'strategies': {k: {'features': '+'.join(v), 'cv': score(v)[0], 'test': score(v)[1]} for k, v in strategies.items()},
            'seconds': round(time.perf_counter() - t, 1)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--sets', default=','.join(SETS)); ap.add_argument('--json')
    ap.add_argument('--per-class', type=int, help='at most this many training and held-out images per class')
    a = ap.parse_args()
    bb = get_backbone('efficientnet_lite0'); stages = stage_outputs(bb)
    rows, log = [], lambda s: print(s, flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for n in a.sets.split(','):
            # digits are a thin stroke on black: the placeholder check (90 % of pixels one colour) would drop many 1s
            folder = load_image_folder(mnist_folder(Path(tmp)), max_flat=1.0) if n == 'mnist5k' else load_image_folder(get_dataset(n))
            rows.append(one_set(n, folder, bb, n != 'mnist5k', stages, log, a.per_class))
            r = rows[-1]
            print(f"{n}: " + '  '.join(f"{k} {v['test']:.1%} ({v['features']})" for k, v in r['strategies'].items()), flush=True)
            if a.json: # rows of earlier runs for other sets are kept
                old = json.loads(Path(a.json).read_text())['rows'] if Path(a.json).exists() else []
                keep = [r for r in old if r['set'] not in {q['set'] for q in rows}]
                Path(a.json).write_text(json.dumps({'stages': stages, 'rows': keep + rows}, indent=1))
    print('\nmean test accuracy of each strategy minus head alone, over', len(rows), 'sets:')
    for k in rows[0]['strategies']:
        d = [r['strategies'][k]['test'] - r['strategies']['head']['test'] for r in rows]
        print(f'  {k:<9} {np.mean(d) * 100:+.2f} points (worst {min(d) * 100:+.1f})')


if __name__ == '__main__': main()
