"""Images per second of the input pipeline at 224 px, on hymenoptera and on the CIFAR-10 subset, in one run.

There is one pipeline, `ImageBatches` (tl_course.batches); `image_batches` and `tf_dataset` are its old names, kept as
wrappers. For each data set (its train split) and each mode (evaluation: centre crop; training: augmentation), one
full pass:
  - `image_batches` (the PyDataset, backend-neutral), in the main thread and with 2 worker threads;
  - `tf_dataset` (the same batches through tf.data with prefetching), first epoch (decoding) and second epoch (the
    decoded base images kept in memory).
Batches include the backbone's normalisation (EfficientNet-Lite0: [-1, 1]).

    python bench/data.py [--cifar-images 1000] [--size 224] [--batch 32]
"""
import argparse, os, time
from pathlib import Path

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

import numpy as np

from tl_course.backbones import backbone_spec
from tl_course.data import image_batches, load_image_folder, tf_dataset

DATA = Path(__file__).resolve().parents[2] / 'shared' / 'data'


def one_pass(batches):
    t0, n = time.perf_counter(), 0
    for x, _ in batches: n += len(x)
    return n / (time.perf_counter() - t0)


def neutral_pass(ds):
    "Iterate a PyDataset the way Keras does (its enqueuer uses the workers), one epoch."
    from keras.src.trainers.data_adapters.py_dataset_adapter import PyDatasetAdapter
    adapter = PyDatasetAdapter(ds, shuffle=False)
    rate = one_pass(adapter.get_numpy_iterator())
    adapter.on_epoch_end()
    return rate


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--cifar-images', type=int, default=1000, help='CIFAR-10 train images used (of 5000)')
    ap.add_argument('--size', type=int, default=224)
    ap.add_argument('--batch', type=int, default=32)
    a = ap.parse_args()
    pre = backbone_spec('efficientnet_lite0').preprocess
    sets = {'hymenoptera': load_image_folder(DATA / 'hymenoptera_data'),  # checked: the GIF placeholder is skipped
            'cifar10_subset': load_image_folder(DATA / 'cifar10_subset')}
    print(f'{a.size}px, batch {a.batch}, {os.cpu_count()} CPUs; images/s, one pass over the train split')
    for name, folder in sets.items():
        files, labels = folder.files(), folder.labels()
        if name == 'cifar10_subset':
            pick = np.random.default_rng(0).permutation(len(files))[:a.cifar_images]
            files, labels = [files[i] for i in pick], labels[pick]
        for training in (False, True):
            kw = dict(size=a.size, batch_size=a.batch, training=training, preprocess=pre)
            row = {'PyDataset': neutral_pass(image_batches(files, labels, **kw)),
                   'PyDataset, 2 threads': neutral_pass(image_batches(files, labels, workers=2, **kw))}
            tfd = tf_dataset(files, labels, **kw)
            row['tf.data epoch 1'] = one_pass(tfd)
            row['tf.data epoch 2 (cached)'] = one_pass(tfd)
            mode = 'train (augment)' if training else 'eval (centre crop)'
            print(f'  {name:<15} {len(files):>5} images  {mode:<18} ' + '  '.join(f'{k} {v:6.0f}' for k, v in row.items()))


if __name__ == '__main__':
    main()
