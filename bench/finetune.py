"""Fine-tuning speed and accuracy, in one run: training images/s of Lite0 with its top unfrozen (from the registry's
cut layer, BatchNorm frozen) through `fine_tune`'s training step against a plain `model.fit` of the same model, for
each dtype policy; then `fine_tune` with the defaults of `tl-course fit` on hymenoptera: accuracy, time, and the time
at which validation accuracy first reached 95 % (and the single-view accuracy beside the mirror-averaged one).
With `--cifar DIR` (slow: about an hour on 2 CPU cores with the defaults), also `fine_tune` on the CIFAR-10 subset's
5,000 training images with phase 2 forced (`--cifar-epochs`, `--cifar-lr`, `--cifar-unfreeze`, and `--cifar-crop-min`,
the smallest share of a 32-px image that a random crop keeps; `--cifar-set NAME=VALUE` for any other `fine_tune` argument),
measured on its 10,000 test images; `--cifar-monitor N` also measures N of them after each epoch, for a learning curve
(their time counts in the training time); `--cifar-run-dir DIR` checkpoints the CIFAR run after each epoch in DIR, and
the same command run again resumes it from the last complete epoch (its training time then sums the processes'). The JSON
report is written after each part, so a run stopped at a time limit keeps what it had measured.
The CIFAR run that reached 90 % (90.16 %, bench/results/finetune_cifar_lite2_ls02.json; 1.8 h of training on 2 cores):
`--cifar-backbone efficientnet_lite2 --cifar-set label_smoothing=0.2`.

Throughput uses random images (no decoding, so that the step itself is measured) and is timed after one warm-up
epoch; "ours" is the model compiled as `fine_tune` compiles it (AdamW with warm-up and cosine decay, label
smoothing, XLA where the backend supports it) fed by `ImageBatches` (uint8 batches made by worker threads; float32 in
bench/results/gpu_*.json); "plain" is the same model compiled with Keras's defaults ('adam', sparse cross-entropy) fed
with the same images as one float32 array.

    python bench/finetune.py [--size 224] [--batch 32] [--steps 8] [--policies float32,mixed_bfloat16]
                             [--data ../shared/data/hymenoptera_data | --data ''] [--json OUT]
                             [--cifar ../shared/data/cifar10_subset [--cifar-epochs 14] [--cifar-lr 2e-4]
                              [--cifar-unfreeze all] [--cifar-crop-min 0.8] [--cifar-monitor 0]
                              [--cifar-backbone efficientnet_lite0[@SIDE]] [--cifar-set NAME=VALUE ...] [--cifar-run-dir DIR]
                              [--cifar-no-head-alone]]
"""
import argparse, ast, json, os, sys, time
from pathlib import Path

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

import numpy as np
import keras

import tl_course.train as T
from tl_course.backbones import get_backbone


def throughput(size, batch, steps, policy, ours, seed=0):
    "Training images/s of the unfrozen Lite0 classifier: median of 3 timed epochs after a warm-up epoch."
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (batch * steps, size, size, 3), dtype=np.uint8)
    y = np.arange(len(x)) % 10
    with T._building(None if policy == 'float32' else policy, None):
        bb = get_backbone('efficientnet_lite0', weights=None, input_size=size)
        model = T.classifier(bb, 10)
    T.set_trainable(bb.model, 'cut', bb.cut_layer)
    if ours:
        opt = keras.optimizers.AdamW(T.warmup_cosine(1e-4, 4 * steps, steps), weight_decay=1e-2)
        model.compile(opt, T.SparseSmoothedCE(0.1), metrics=['accuracy'], jit_compile='auto')
        data = T.ImageBatches(x, y, size, batch, training=True, augment=False, workers=4)
        fit = lambda: model.fit(data, epochs=1, verbose=0)
    else:
        model.compile('adam', 'sparse_categorical_crossentropy', metrics=['accuracy'])
        xf = x.astype(np.float32)
        fit = lambda: model.fit(xf, y, batch_size=batch, epochs=1, verbose=0)
    fit() # warm-up: tracing and compilation are not timed
    times = []
    for _ in range(3):
        t0 = time.perf_counter(); fit(); times.append(time.perf_counter() - t0)
    return len(x) / float(np.median(times))


def cifar(root, epochs, lr, unfreeze, crop_min, monitor=0, backbone='efficientnet_lite0', run_dir=None, head_alone=True, **options):
    """fine_tune on the train split (phase 2 forced), then accuracy on the test split, one view and mirror-averaged;
    and the test accuracy of the head alone (after phase 1), from the frozen network's features of the test images.
    `monitor` > 0: that many test images (a fixed random choice) are also measured after each epoch, one view, to draw
    the learning curve; they steer nothing (no early stopping, no choice of epoch). `run_dir`: checkpoints there, and
    resumes the run it holds; the head after phase 1 is kept there too (head_after_phase1.npz), for a resumed run's figure.
    `head_alone=False`: no head-alone figure (it costs as much as the test itself: the frozen network on both views)."""
    import tempfile
    from tl_course.data import load_image_folder
    from tl_course.features import extract_features, write_atomic
    name, _, side = backbone.partition('@') # efficientnet_lite2@300: another input side
    load = lambda: get_backbone(name, input_size=int(side) if side else None) # fresh ImageNet weights
    f = load_image_folder(root)
    head_file = None if run_dir is None else Path(run_dir) / 'head_after_phase1.npz'
    y_test = np.asarray(f.labels('test'))
    monitor = min(monitor, len(y_test)) # at most the whole test split
    watch = np.sort(np.random.default_rng(0).choice(len(y_test), monitor, replace=False)) if monitor else None
    val = None if watch is None else ([f.files('test')[i] for i in watch], y_test[watch])

    class HeadAtPhase2(keras.callbacks.Callback): # the dense layer as phase 1 left it
        kernel = None
        def on_train_begin(self, logs=None): # a resumed run's head was kept by the process that ran phase 1
            if HeadAtPhase2.kernel is not None or (head_file is not None and head_file.exists()): return
            HeadAtPhase2.kernel, HeadAtPhase2.bias = (np.asarray(w) for w in self.model.get_layer('classifier').get_weights())
            if head_file is not None:
                write_atomic(head_file, lambda p: np.savez(p, kernel=HeadAtPhase2.kernel, bias=HeadAtPhase2.bias))
            print(f'  cifar phase 1 done after {time.time() - t0:.0f} s; phase 2 starts', flush=True)

    t0 = time.time()
    with tempfile.TemporaryDirectory() as cache:
        run = T.fine_tune(load(), (f.files('train'), f.labels('train')), val, classes=f.classes,
                          epochs_fine=epochs, fine_lr=lr, unfreeze=unfreeze, crop_scale=(crop_min, 1.0), cache=cache, callbacks=[HeadAtPhase2()],
                          run_dir=run_dir, **options,
                          on_epoch=lambda r: print(f"  cifar epoch {r['epoch'] + 1} (phase {r['phase']}): train accuracy "
                                                   f"{r['accuracy']:.1%}" + (f", {monitor} test images {r['val_accuracy']:.1%}"
                                                   if monitor else '') + f", {r['seconds']:.0f} s", flush=True))
    if HeadAtPhase2.kernel is None and head_alone: # a resumed run: phase 1 ended in an earlier process
        if head_file is None or not head_file.exists(): raise ValueError(f'{run_dir}: no head_after_phase1.npz; start a new run directory')
        with np.load(head_file) as z: HeadAtPhase2.kernel, HeadAtPhase2.bias = z['kernel'], z['bias']
    seconds = run.metrics['seconds'] # all processes' training time, for a resumed run
    tt = time.time()
    b = T.ImageBatches(f.files('test'), y_test, run.backbone.input_size, 64, workers=4)
    one, mirror = run.views(b)
    t1 = time.time()
    if head_alone:
        feats = np.asarray(extract_features(load(), f.files('test'), mirror='both', cache=False, progress=False))
        logits = feats @ HeadAtPhase2.kernel + HeadAtPhase2.bias # (N, 2 views, classes): dropout is off at inference
        p = np.exp(logits - logits.max(-1, keepdims=True)); p /= p.sum(-1, keepdims=True)
    r = {'data': Path(root).name, 'backbone': name, 'input_size': run.backbone.input_size, 'n_train': len(f.labels('train')), 'n_test': len(y_test), 'epochs_fine': epochs,
         'fine_lr': lr, 'unfreeze': unfreeze, 'crop_scale': [crop_min, 1.0], **options, 'train_seconds': round(seconds),
         'train_accuracy_by_epoch': [round(v, 4) for v in run.history['accuracy']],
         **({'monitor_images': monitor, 'monitor_accuracy_by_epoch': [round(v, 4) for v in run.history['val_accuracy']]}
            if monitor else {}),
         **({'resumed_after_epoch': run.resumed_from} if run.resumed_from is not None else {}),
         'test_seconds': round(t1 - tt),
         **({'accuracy_after_head': float((p.mean(1).argmax(1) == y_test).mean()),
             'accuracy_after_head_single_view': float((p[:, 0].argmax(1) == y_test).mean())} if head_alone else {}),
         'accuracy_single_view': float((one.argmax(1) == y_test).mean()),
         'accuracy': float(((one + mirror).argmax(1) == y_test).mean())}
    print(f"fine_tune of {name} at {r['input_size']} px on {r['data']} ({r['n_train']} training images, phase 2 {epochs} epochs at peak lr {lr:g}, "
          f"unfrozen from {unfreeze}, crops of {crop_min:g} to 1 of the area{''.join(f', {k}={v}' for k, v in options.items())}): test accuracy {r['accuracy']:.2%} mirror-averaged, {r['accuracy_single_view']:.2%} "
          f"one view, on {r['n_test']} images" + (f" (the head alone: {r['accuracy_after_head']:.2%})" if head_alone else '') + "; training "
          f"{r['train_seconds']} s, testing {r['test_seconds']} s", flush=True)
    return r


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--size', type=int, default=224)
    ap.add_argument('--batch', type=int, default=32)
    ap.add_argument('--steps', type=int, default=8)
    ap.add_argument('--policies', default='float32,mixed_bfloat16')
    ap.add_argument('--data', default=str(Path(__file__).resolve().parents[2] / 'shared' / 'data' / 'hymenoptera_data'))
    ap.add_argument('--json', default=None, help='also write the report to this file')
    ap.add_argument('--cifar', default=None, help='a folder with train/ and test/ splits (slow)')
    ap.add_argument('--cifar-epochs', type=int, default=14)
    ap.add_argument('--cifar-lr', type=float, default=2e-4)
    ap.add_argument('--cifar-unfreeze', default='all')
    ap.add_argument('--cifar-crop-min', type=float, default=0.8)
    ap.add_argument('--cifar-backbone', default='efficientnet_lite0', help='a registry name, optionally @SIDE for another input side')
    ap.add_argument('--cifar-monitor', type=int, default=0, metavar='N',
                    help='measure N test images after each epoch (a learning curve; they steer nothing)')
    ap.add_argument('--cifar-run-dir', default=None, metavar='DIR',
                    help='checkpoint the CIFAR run in DIR after each epoch; the same command again resumes it')
    ap.add_argument('--cifar-no-head-alone', action='store_true',
                    help="skip the head-alone test figure (half the test time: the frozen network on both views)")
    ap.add_argument('--cifar-set', action='append', default=[], metavar='NAME=VALUE',
                    help="another fine_tune argument for the CIFAR run, a Python literal (repeatable): bn_training=True")
    a = ap.parse_args()
    options = {}
    for kv in a.cifar_set:
        k, _, v = kv.partition('=')
        if not _ or not k.isidentifier(): ap.error(f'--cifar-set takes NAME=VALUE, got {kv!r}')
        options[k] = ast.literal_eval(v)
    report = {'backend': keras.backend.backend(), 'size': a.size, 'batch': a.batch, 'cpus': os.cpu_count(), 'images_per_s': {}}
    if report['backend'] == 'tensorflow': # TF_ENABLE_ONEDNN_OPTS=0 halved CPU training speed here (Lite2 on CIFAR: ~600 s an epoch, not ~320)
        report['tf_enable_onednn_opts'] = os.environ.get('TF_ENABLE_ONEDNN_OPTS', 'default (on)')
    if report['backend'] == 'jax': # float32 products run as TF32 on NVIDIA tensor cores unless this says 'float32'
        report['jax_default_matmul_precision'] = os.environ.get('JAX_DEFAULT_MATMUL_PRECISION', 'default')
    def save(): # after each part, so that a run stopped at a time limit keeps what it measured
        if a.json: Path(a.json).write_text(json.dumps(report, indent=1))
    print(f'EfficientNet-Lite0 at {a.size} px, batch {a.batch}, backend {report["backend"]}, {os.cpu_count()} CPUs', flush=True)
    for policy in [p for p in a.policies.split(',') if p]: # --policies '': no throughput figures
        ips = {k: round(throughput(a.size, a.batch, a.steps, policy, k == 'ours'), 1) for k in ('plain model.fit', 'ours')}
        report['images_per_s'][policy] = ips
        save()
        print(f'  {policy:<15} plain model.fit {ips["plain model.fit"]:7.1f} images/s, ours {ips["ours"]:7.1f} images/s: '
              f'{ips["ours"] / ips["plain model.fit"]:.2f}x', flush=True)
    pol = a.policies.split(',')
    if 'float32' in pol and len(pol) > 1:
        for p in pol[1:]:
            r = report['images_per_s'][p]['ours'] / report['images_per_s']['float32']['ours']
            report[f'{p}_vs_float32'] = round(r, 2)
            print(f'  {p} against float32 (ours): {r:.2f}x')
    save()
    if a.data and Path(a.data).is_dir():
        from tl_course.data import load_image_folder
        from tl_course.features import eval_split
        import tempfile
        f = load_image_folder(a.data)
        split = eval_split(f)
        reached = {}
        def on_epoch(row):
            if row.get('val_accuracy', 0) >= 0.95 and not reached: reached.update(epoch=row['epoch'], seconds=row['seconds'])
        with tempfile.TemporaryDirectory() as cache:
            run = T.fine_tune('efficientnet_lite0', (f.files('train'), f.labels('train')), (f.files(split), f.labels(split)),
                              classes=f.classes, cache=cache, on_epoch=on_epoch)
        report['fit'] = {'data': Path(a.data).name, 'accuracy': run.metrics['accuracy'], 'n_train': run.metrics['n_train'],
                         'accuracy_single_view': run.metrics.get('accuracy_single_view'),
                         'n_val': run.metrics['n_val'], 'seconds': run.metrics['seconds'],
                         'val_accuracy_by_epoch': [round(v, 4) for v in run.history['val_accuracy']],
                         'seconds_to_95': reached.get('seconds'), 'epoch_reaching_95': reached.get('epoch')}
        r = report['fit']
        print(f'fine_tune defaults on {r["data"]}: {r["accuracy"]:.1%} on {r["n_val"]} {split} images in {r["seconds"]:.0f} s '
              f'(first at >= 95 % val accuracy: {r["seconds_to_95"]} s, epoch {r["epoch_reaching_95"]}); '
              f'val accuracy by epoch {r["val_accuracy_by_epoch"]}')
        save()
    if a.cifar: report['cifar'] = cifar(a.cifar, a.cifar_epochs, a.cifar_lr, a.cifar_unfreeze, a.cifar_crop_min, a.cifar_monitor,
                                           a.cifar_backbone, a.cifar_run_dir, not a.cifar_no_head_alone, **options)
    print(json.dumps(report))
    save()


if __name__ == '__main__':
    main()
