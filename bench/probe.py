"""The linear probe on real folders: accuracy, extraction speed, cold against cached runs, and our extraction against
a plain `model.predict` loop, all in one run.

For each data set (default: ../shared/data/hymenoptera_data and ../shared/data/cifar10_subset) `linear_probe` runs with
its defaults twice against a fresh cache folder: cold (features extracted) and warm (features read back). Then, on the
hymenoptera photos, `extract_features` (no cache, no mirror averaging) is timed against the loop most tutorials write:
for each batch of files, decode and resize, then `model.predict`; then both again on images decoded and cropped
beforehand (the network part alone); all in interleaved rounds, best round kept. `--sets ''` runs only this part.

    python bench/probe.py [--data ../shared/data] [--sets hymenoptera_data,cifar10_subset] [--rounds 2]
"""
import argparse, json, os, tempfile, time
from pathlib import Path

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

import numpy as np
import keras

from tl_course.backbones import get_backbone
from tl_course.data import load_image, load_image_folder
from tl_course.features import evaluation_crop, extract_features, linear_probe


def predict_loop(bb, files, batch=32, decoded=False):
    "The plain loop: decode a batch of files (unless given decoded images), then `model.predict` on it."
    out = []
    for i in range(0, len(files), batch):
        x = (files[i:i + batch] if decoded else
             np.stack([evaluation_crop(load_image(f), bb.input_size) for f in files[i:i + batch]])).astype(np.float32)
        out.append(bb.model.predict(bb.preprocess(x), verbose=0))
    return np.concatenate(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--data', default=str(Path(__file__).resolve().parents[2] / 'shared' / 'data'))
    ap.add_argument('--sets', default='hymenoptera_data,cifar10_subset')
    ap.add_argument('--rounds', type=int, default=2)
    a = ap.parse_args()
    bb = get_backbone('efficientnet_lite0')
    print(f'EfficientNet-Lite0 at {bb.input_size} px, backend {keras.backend.backend()}, {os.cpu_count()} CPUs')
    report = {}
    with tempfile.TemporaryDirectory() as cache:
        for name in filter(None, a.sets.split(',')):
            t = time.perf_counter()
            folder = load_image_folder(Path(a.data) / name)
            t_load = time.perf_counter() - t
            cold = linear_probe(folder, bb, cache=cache)
            warm = linear_probe(folder, bb, cache=cache)
            m, w = cold.metrics, warm.metrics
            assert w['accuracy'] == m['accuracy'], (m['accuracy'], w['accuracy'])
            n = m['n_train'] + m['n_val']
            report[name] = r = {
                'accuracy': m['accuracy'], 'eval_split': m['eval_split'], 'n_train': m['n_train'], 'n_val': m['n_val'],
                'features_from': m['features_from'], 'cv_accuracy_by_features': m['cv_accuracy_by_features'], 'C': m['C'],
                'seconds_folder_check': round(t_load, 1),
                'extraction_images_per_s': round(2 * n / m['seconds_features'], 1), # mirror averaging: 2 passes per image
                'seconds_features_cold': m['seconds_features'], 'seconds_features_cached': w['seconds_features'],
                'features_cached_speedup': round(m['seconds_features'] / w['seconds_features'], 1),
                'seconds_cold': m['seconds'], 'seconds_cached': w['seconds'],
                'run_cached_speedup': round(m['seconds'] / w['seconds'], 1)}
            print(f'{name}: accuracy {r["accuracy"]:.1%} on {r["n_val"]} {r["eval_split"]} images '
                  f'(train {r["n_train"]}; features {r["features_from"]}, C {r["C"]:.3g})')
            print(f'  extraction {r["extraction_images_per_s"]} images/s (network passes, mirror included); '
                  f'features cold {r["seconds_features_cold"]} s, cached {r["seconds_features_cached"]} s '
                  f'({r["features_cached_speedup"]}x); whole run cold {r["seconds_cold"]} s, cached {r["seconds_cached"]} s '
                  f'({r["run_cached_speedup"]}x: the classifier is refitted once at the C found before)')
        hym = Path(a.data) / 'hymenoptera_data'
        if hym.is_dir():
            f = load_image_folder(hym)
            files = f.files('train') + f.files('val')
            crops = np.stack([evaluation_crop(load_image(f), bb.input_size) for f in files])
            runs = {'extract_features': lambda: extract_features(bb, files, cache=False, progress=False),
                    'model.predict loop': lambda: predict_loop(bb, files),
                    'extract_features, decoded': lambda: extract_features(bb, crops, crop_fraction=1, cache=False, progress=False),
                    'model.predict loop, decoded': lambda: predict_loop(bb, crops, decoded=True)}
            outs = {k: np.asarray(g()) for k, g in runs.items()} # warm-up: tracing is not timed
            for k in runs: np.testing.assert_allclose(outs[k], outs['model.predict loop'], atol=1e-4)
            times = {k: [] for k in runs}
            for _ in range(a.rounds):
                for k, g in runs.items():
                    t = time.perf_counter(); g(); times[k].append(time.perf_counter() - t)
            best = {k: min(v) for k, v in times.items()}
            speed = {k: round(len(files) / t, 1) for k, t in best.items()}
            ratio = round(best['model.predict loop'] / best['extract_features'], 2)
            ratio_net = round(best['model.predict loop, decoded'] / best['extract_features, decoded'], 2)
            report['extraction_vs_predict_loop'] = {'images': len(files), 'images_per_s': speed, 'speedup_from_files': ratio,
                                                    'speedup_decoded': ratio_net}
            print(f'hymenoptera photos ({len(files)}), best of {a.rounds} rounds:')
            print(f'  from the JPEG files: extract_features {speed["extract_features"]} images/s, '
                  f'model.predict loop {speed["model.predict loop"]} images/s: {ratio}x')
            print(f'  decoded and cropped beforehand (the network part): extract_features '
                  f'{speed["extract_features, decoded"]} images/s, model.predict loop {speed["model.predict loop, decoded"]} '
                  f'images/s: {ratio_net}x')
    print(json.dumps(report))


if __name__ == '__main__':
    main()
