"""Run lesson notebooks for real and store their outputs, as they are committed.

    python tools/execute_notebooks.py [nbs/05_backbones.ipynb ...]   (default: every notebook in nbs/)
    KEEP_SLOW=1 python tools/execute_notebooks.py ...   (cells flagged `#| slow` are not run; they keep the outputs of
                                                         their last real run: for edits after the slow cells, when
                                                         nothing they compute changed)
    KEEP_SLOW=1 RUN_SLOW=<cell id>,<cell id> ...         (as KEEP_SLOW, but these slow cells run: new ones, which must
                                                         not need what the kept ones compute)

Each notebook is executed in place in its own folder (as nbdev-test does); then stderr outputs that consist only
of TensorFlow's C++ start-up lines (absl, cudart, oneDNN notices, printed whatever TF_CPP_MIN_LOG_LEVEL says) are
dropped, and nbdev-clean removes metadata. Nothing else in the outputs is touched.
"""
import os, re, subprocess, sys
from pathlib import Path
import nbformat
from nbconvert.preprocessors import ExecutePreprocessor

NOISE = re.compile(r'^(WARNING: All log messages before absl::InitializeLog\(\)|[IW]\d{4} .*(cudart_stub|port\.cc|cpu_feature_guard)|'
                   r'To enable the following instructions|E0000 .*Unable to register)')

root = Path(__file__).resolve().parent.parent
paths = [Path(p) for p in sys.argv[1:]] or sorted((root / 'nbs').rglob('*.ipynb'))
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
for path in paths:
    nb = nbformat.read(path, as_version=4)
    run_slow = set(filter(None, os.environ.get('RUN_SLOW', '').split(',')))
    slow = {i: (c.source, c.outputs) for i, c in enumerate(nb.cells)
            if os.environ.get('KEEP_SLOW') and c.cell_type == 'code' and re.search(r'^#\|\s*slow', c.source, re.M)
            and c.get('id') not in run_slow}
    for i in slow: nb.cells[i].source = ''
    ExecutePreprocessor(timeout=1800, kernel_name='python3').preprocess(nb, {'metadata': {'path': str(path.parent)}})
    for i, (source, outputs) in slow.items(): nb.cells[i].source, nb.cells[i].outputs = source, outputs
    for cell in nb.cells:
        if cell.cell_type != 'code': continue
        cell.outputs = [o for o in cell.outputs if not (o.get('name') == 'stderr' and
                        all(NOISE.match(l) for l in o.get('text', '').splitlines() if l.strip()))]
    nbformat.write(nb, path)
    print(f'{path.name}: executed, {path.stat().st_size / 1e3:.0f} kB')
subprocess.run([str(Path(sys.executable).with_name('nbdev-clean'))], cwd=root, check=True)
