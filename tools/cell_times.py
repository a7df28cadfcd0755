"""Seconds per cell of a notebook as nbdev-test runs it (no `slow` or `notest` cells, not the export cell); cells over 1.5 s are printed.

    TF_NUM_INTRAOP_THREADS=1 TF_NUM_INTEROP_THREADS=1 OMP_NUM_THREADS=1 python tools/cell_times.py nbs/12_choosing.ipynb
"""
import sys, time, re, os, nbformat
from nbclient import NotebookClient
p = sys.argv[1]
nb = nbformat.read(p, as_version=4)
nb.cells = [c for c in nb.cells if not (c.cell_type == 'code' and re.search(r'^#\|\s*(slow|notest)', c.source, re.M)) and 'nbdev_export()' not in c.source]
client = NotebookClient(nb, timeout=1800, kernel_name='python3', resources={'metadata': {'path': os.path.dirname(os.path.abspath(p))}})
with client.setup_kernel():
    for i, c in enumerate(nb.cells):
        if c.cell_type != 'code': continue
        t = time.time(); client.execute_cell(c, i); dt = time.time() - t
        if dt > 1.5: print(f'{dt:6.1f}s  {c.source.splitlines()[0][:90]}', flush=True)
