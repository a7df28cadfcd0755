"""Which backbone to fine-tune? The linear probe of each, on the same images: a cheap first measure of how well a
network's frozen features suit a data set, before an hour of fine-tuning.

For each backbone: `linear_probe` on the training split, measured on a fixed random choice of the evaluation split's
images (features of the network's head only, each image averaged with its mirror image; logistic regression, C by
cross-validation on the training split only), and the seconds it all took. Default: the CIFAR-10 subset, Lite0 at 224 px against Lite2 at its
own 260 px and at 224 px.

    python bench/probe_backbones.py [--data ../shared/data/cifar10_subset] [--test 2000]
                                    [--backbones efficientnet_lite0,efficientnet_lite2,efficientnet_lite2@224] [--json OUT]
"""
import argparse, dataclasses, json, os, time
from pathlib import Path

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

import numpy as np

from tl_course.backbones import get_backbone
from tl_course.data import load_image_folder
from tl_course.features import eval_split, linear_probe


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--data', default=str(Path(__file__).resolve().parents[2] / 'shared' / 'data' / 'cifar10_subset'))
    ap.add_argument('--test', type=int, default=2000, help='test images, a fixed random choice (0: all)')
    ap.add_argument('--backbones', default='efficientnet_lite0,efficientnet_lite2,efficientnet_lite2@224',
                    help='registry names, each optionally @SIDE for another input side')
    ap.add_argument('--json', default=None)
    a = ap.parse_args()
    f = load_image_folder(a.data)
    test = eval_split(f)
    te, yte = f.files(test), np.asarray(f.labels(test))
    if a.test and a.test < len(te): # the same images for every backbone
        idx = np.sort(np.random.default_rng(0).choice(len(te), a.test, replace=False))
        f = dataclasses.replace(f, splits={**f.splits, test: ([te[i] for i in idx], yte[idx])})
    report = {'data': Path(a.data).name, 'n_train': len(f.labels('train')), 'n_test': len(f.labels(test)),
              'cpus': os.cpu_count(), 'probe': {}}
    for name in [b for b in a.backbones.split(',') if b]:
        bb_name, _, side = name.partition('@')
        t0 = time.time()
        bb = get_backbone(bb_name, input_size=int(side) if side else None)
        probe = linear_probe(f, bb, mid_level=False, cache=False)
        r = {'input_size': bb.input_size, 'accuracy': probe.metrics['accuracy'], 'seconds': round(time.time() - t0)}
        report['probe'][name] = r
        print(f"{name:<26} {bb.input_size} px: probe accuracy {r['accuracy']:.2%} on {report['n_test']} {test} images, {r['seconds']} s", flush=True)
        if a.json: Path(a.json).write_text(json.dumps(report, indent=1))
    print(json.dumps(report))


if __name__ == '__main__':
    main()
