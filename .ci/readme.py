"Write README.md from nbs/index.ipynb (Quarto, which nbdev-readme needs, cannot be installed on our machines)."
from pathlib import Path
from nbconvert import MarkdownExporter
import nbformat

root = Path(__file__).resolve().parent.parent
nb = nbformat.read(root / 'nbs' / 'index.ipynb', as_version=4)
nb.metadata['language_info'] = {'name': 'python'}  # nbdev-clean strips it; it tags the code blocks
nb.cells = [c for c in nb.cells if not c.source.lstrip().startswith('#| hide')]
for c in nb.cells:  # drop nbdev directives from the code shown
    c.source = '\n'.join(l for l in c.source.splitlines() if not l.startswith('#|'))
body, _ = MarkdownExporter(exclude_input_prompt=True, exclude_output_prompt=True).from_notebook_node(nb)
text = '<!-- Generated from nbs/index.ipynb by .ci/readme.py: edit the notebook, then run python .ci/readme.py -->\n\n'
text += body.strip() + '\n'
(root / 'README.md').write_text(text)
