"""Which lessons have a widget, and where: shared by the browser test (tests/test_browser.py), which runs those lessons
whole in JupyterLab, and `.ci/test`, whose nbdev-test then leaves them out (each lesson runs once in CI).

    python tests/widget_lessons.py   prints a regular expression of their file names, for `nbdev-test --skip-file-re`"""
import json, re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXPLORER = re.compile(r'^\w*explorer$') # a lesson's widget cell ends with its explorer's name, which displays it
SKIPPED = re.compile(r'^#\|\s*(slow|notest|eval:\s*false)\b', re.M) # cells nbdev-test does not run (tst_flags, eval: false)


def runnable_cells(path) -> list:
    "The lesson's cells that nbdev-test runs: all but those flagged `slow` or `notest` and those with `eval: false`."
    return [c for c in json.loads(Path(path).read_text())['cells'] if not SKIPPED.search(''.join(c['source']))]


def widget_cell(path) -> int | None:
    "Index among `runnable_cells` of the lesson's first widget cell (a code cell whose last line is an `...explorer` name), or None."
    for i, c in enumerate(runnable_cells(path)):
        lines = ''.join(c['source']).strip().splitlines()
        if c['cell_type'] == 'code' and lines and EXPLORER.match(lines[-1].strip()): return i


WIDGET_LESSONS = sorted(p for p in (ROOT / 'nbs').glob('[0-9]*.ipynb') if widget_cell(p) is not None)

if __name__ == '__main__':
    print('^(' + '|'.join(re.escape(p.name) for p in WIDGET_LESSONS) + ')$')
