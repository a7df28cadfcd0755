"""What deployment costs: a fine-tuned classifier exported to every format, each checked against the Keras model (issue 21).

A `tl-course fit` run (hymenoptera by default: Lite0 at 224 px, the library's defaults) is exported to SavedModel,
TFLite float32, TFLite full-integer int8 (calibrated on 100 training images, seed 0) and ONNX; then each file is read
back and measured on the run's evaluation split (each image averaged with its mirror image, as the run measured
itself): accuracy, agreement of the predicted class with the Keras model's, the largest probability difference, its
size on disk, and the median milliseconds for one image on this CPU (after warm-up calls, 50 timed ones; the Keras model
through its compiled call). Timings on a shared machine are noisy: read them as ratios to the Keras row of one run.

    python bench/export.py [--data DATA_DIR] [--run RUN_DIR] [--json OUT]

Without --run, the run is made first in a temporary folder (about 40 s on 2 cores for hymenoptera, whose phase 2 the
defaults skip). Needs `pip install -e ".[export]"`.
"""
import argparse, json, os, sys, tempfile, time
from pathlib import Path
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

from tl_course.cli import main as tl_course
from tl_course.datasets import get_dataset
from tl_course.export import compare_exports, export_classifier
from tl_course.folders import load_image_folder

p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
p.add_argument('--data', help='a data folder with train and val (or test) splits (default: hymenoptera, through get_dataset)')
p.add_argument('--run', help='an existing run folder of --data (default: fit one)')
p.add_argument('--repeats', type=int, default=50)
p.add_argument('--json', help='write the rows here')
a = p.parse_args()
data = Path(a.data) if a.data else get_dataset('hymenoptera')
run = Path(a.run) if a.run else Path(tempfile.mkdtemp()) / 'run'
if not a.run:
    t0 = time.time()
    assert tl_course(['fit', str(data), '--out', str(run)]) == 0
    print(f'fitted in {time.time() - t0:.0f} s', file=sys.stderr)
train = load_image_folder(data).files('train')
files, seconds = [], {}
for fmt, int8 in (('savedmodel', False), ('tflite', False), ('tflite', True), ('onnx', False)):
    t0 = time.time(); files.append(export_classifier(run, fmt, int8=int8, calibration=train if int8 else None))
    seconds[f"{fmt}{' int8' if int8 else ''}"] = time.time() - t0
rows = compare_exports(run, data, files, repeats=a.repeats)
k = rows[0]
print(f"{data.name}: {k['n']} images of its {k['split']} split, each averaged with its mirror image; {os.cpu_count()} CPU cores")
print(f"{'format':<13}{'MB':>7}{'size':>7}{'accuracy':>10}{'agreement':>11}{'max |dp|':>10}{'ms/image':>10}{'speed':>7}{'export s':>10}")
for r in rows:
    print(f"{r['format']:<13}{r['MB']:7.2f}{r['MB'] / k['MB']:7.2f}{r['accuracy']:10.2%}{r['agreement']:11.2%}"
          f"{r['max_prob_diff']:10.4f}{r['ms_per_image']:10.2f}{k['ms_per_image'] / r['ms_per_image']:6.1f}x"
          f"{seconds.get(r['format'], float('nan')):10.1f}")
if a.json: Path(a.json).write_text(json.dumps({'data': str(data), 'rows': rows, 'export_seconds': seconds}, indent=1))
