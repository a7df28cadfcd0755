"""The probe's defaults against a plain baseline on every data set the course has: library defaults are judged on the
whole suite, never on one set (issue 22).

For each set: `linear_probe` with its defaults (Lite0; features averaged with the mirror image's; the cut layer's
pooled features appended when cross-validation on the training split prefers them), and the plain baseline: logistic
regression (C by cross-validation) on the head's features of the centre crop, no mirror. Both are fitted on the
training split only and measured once on the held-out split. MNIST-5k runs with `mirror=False` for both, as a user
passes `--no-mirror` for digits (a mirrored digit is another shape); it is written out as PNG files (a stratified
4,000 / 1,000 split, seed 0) so that the probe reads it as it reads any folder.

Prints one row per set: accuracy of each, the difference with a paired 95 % bootstrap interval, what one image is
worth, and the defaults' choice of features; then the mean difference.

    python bench/suite.py [--sets hymenoptera,cifar10_subset,mnist5k,aid10,dtd10] [FOLDER ...] [--layers cut|auto|...] [--json OUT]

`--layers` gives the probe another `layers` than the library's default ('auto'), to judge a candidate default on the
whole suite. Measured (bench/results/suite.json and suite_cut.json): 'auto' +1.20 points over the baseline on average,
+0.3 at worst (MNIST); 'cut', the default before, +0.91 on average; 'auto' never scored below 'cut' on a set, and its
probe took 1.8 to 3.1 times as long on the four larger sets (more stage outputs to choose among by cross-validation;
an underestimate: the 'auto' run found the baseline's features cached by the 'cut' run).

Data sets come through `get_dataset` (TL_COURSE_DATA); a FOLDER is `<root>/<split>/<class>/*` with a val or test
split. Features are cached (TL_COURSE_CACHE), so a second run takes seconds; the first, about 15 minutes on 2 CPU
cores, most of it CIFAR-10's 15,000 images.
"""
import argparse, json, os, tempfile, time
from pathlib import Path
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

import numpy as np

from tl_course.data import get_dataset, load_image_folder
from tl_course.demo import gain_interval
from tl_course.features import extract_features, fit_probe, linear_probe
from tl_course.probe import eval_split
from tl_course.registry import get_backbone

SETS = ('hymenoptera', 'cifar10_subset', 'mnist5k', 'aid10', 'dtd10')


def mnist_folder(root: Path) -> Path:
    "MNIST-5k as PNG files: train/<digit>/*.png and test/<digit>/*.png, a stratified 80/20 split (seed 0)."
    from PIL import Image
    from sklearn.model_selection import train_test_split
    d = get_dataset('mnist5k')
    tr, te = train_test_split(np.arange(len(d.y)), test_size=0.2, stratify=d.y, random_state=0)
    for split, idx in (('train', tr), ('test', te)):
        for i in idx:
            (root / split / d.classes[d.y[i]]).mkdir(parents=True, exist_ok=True)
            Image.fromarray(d.x[i]).save(root / split / d.classes[d.y[i]] / f'{i:04d}.png')
    return root


def one_set(name, folder, bb, mirror, layers):
    t = time.perf_counter()
    p = linear_probe(folder, bb, mirror=mirror, layers=layers)
    split = eval_split(folder)
    ex = dict(mirror=False, progress=False)
    xtr, xte = extract_features(bb, folder.files('train'), **ex), extract_features(bb, folder.files(split), **ex)
    y = folder.labels(split)
    base = fit_probe(xtr, folder.labels('train')).predict(xte)
    lo, hi = gain_interval(y, base, p.y_pred)
    return {'set': name, 'layers': layers, 'n_train': p.metrics['n_train'], 'n_test': len(y), 'mirror': mirror,
            'defaults': p.metrics['accuracy'], 'baseline': float(np.mean(base == y)),
            'difference': p.metrics['accuracy'] - float(np.mean(base == y)), 'difference_95': [lo, hi],
            'one_image': 1 / len(y), 'features_from': p.metrics['features_from'], 'seconds': round(time.perf_counter() - t, 1)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('folders', nargs='*', metavar='FOLDER', help='more data sets: <root>/<split>/<class>/*')
    ap.add_argument('--sets', default=','.join(SETS)); ap.add_argument('--json')
    ap.add_argument('--layers', default='auto', help="the probe's `layers` for the defaults' column (the library's default: auto)")
    a = ap.parse_args()
    bb, rows = get_backbone('efficientnet_lite0'), []
    with tempfile.TemporaryDirectory() as tmp:
        todo = [(n, (mnist_folder(Path(tmp)) if n == 'mnist5k' else get_dataset(n)), n != 'mnist5k') for n in a.sets.split(',') if n]
        todo += [(Path(f).name, Path(f), True) for f in a.folders]
        for name, path, mirror in todo:
            # digits are a thin stroke on black: the placeholder check (90 % of pixels one colour) would drop many 1s
            rows.append(one_set(name, load_image_folder(path, max_flat=1.0 if name == 'mnist5k' else 0.9), bb, mirror, a.layers))
            r = rows[-1]
            print(f"{r['set']:<16} defaults {r['defaults']:6.1%}  baseline {r['baseline']:6.1%}  difference "
                  f"{r['difference'] * 100:+5.1f} points (95 %: {r['difference_95'][0] * 100:+.1f} to {r['difference_95'][1] * 100:+.1f}; "
                  f"one image {r['one_image'] * 100:.2f})  defaults chose {r['features_from']}  ({r['seconds']:.0f} s)", flush=True)
            if a.json: Path(a.json).write_text(json.dumps({'rows': rows}, indent=1))
    diff = np.array([r['difference'] for r in rows])
    summary = {'mean_difference': float(diff.mean()), 'worst_difference': float(diff.min()), 'worst_set': rows[int(diff.argmin())]['set']}
    print(f"mean difference {summary['mean_difference'] * 100:+.2f} points over {len(rows)} sets; worst "
          f"{summary['worst_difference'] * 100:+.1f} ({summary['worst_set']}). Issue 22's targets: mean >= +1, none below -0.5")
    if a.json: Path(a.json).write_text(json.dumps({'rows': rows, 'summary': summary}, indent=1))


if __name__ == '__main__': main()
