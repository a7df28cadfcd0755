"""Collapse each exercise's solution cell in JupyterLab (cell metadata `jupyter.source_hidden`).

    python tools/hide_solutions.py [nbs/NN_name.ipynb ...]   (default: every lesson nbs/NN_*.ipynb)

A lesson's exercise is a markdown cell with a heading `### Exercise N: ...`, then the solution (a code cell, hidden
here, so a learner tries first), then a visible check cell. nbdev-clean keeps the `jupyter` key (pyproject.toml).
"""
import json, re, sys
from pathlib import Path

root = Path(__file__).resolve().parent.parent
for path in [Path(p) for p in sys.argv[1:]] or sorted((root / 'nbs').glob('[0-9][0-9]_*.ipynb')):
    nb = json.loads(path.read_text())
    cells, n = nb['cells'], 0
    for prev, c in zip(cells, cells[1:]):
        if prev['cell_type'] == 'markdown' and re.match(r'###\s*Exercise', ''.join(prev['source'])) and c['cell_type'] == 'code':
            c['metadata'] = {**c['metadata'], 'jupyter': {'source_hidden': True}}; n += 1
    path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + '\n')
    print(f'{path.name}: {n} solution cells hidden')
