"""What a learner does with a lesson's widget, in JupyterLab in headless Chromium: open the lesson, run it up to its
widget, move the slider one step with the keyboard, see the figure change; a screenshot of each widget before and
after goes to `.ci/screenshots/` (ignored by git, kept by CI as artefacts).

Needs Debian's `chromium` and Playwright for Python (`pip install -e ".[dev]"`; Playwright cannot download its own
browser here, so it drives the system one through `executable_path`). Skipped when either is missing, unless
`TL_COURSE_BROWSER=1` (as `.ci/test` sets), where a missing browser fails the run instead.

Each lesson runs whole, the cells `nbdev-test` runs (not those flagged `slow` or `notest`; not the hidden
`nbdev_export()` at the end, which needs the project's pyproject.toml): no cell may fail, and every check in the lesson
holds. So `.ci/test` leaves these lessons out of its nbdev-test (tests/widget_lessons.py names them): each lesson runs
once in CI. Two lessons run at a time (the longest first, the next as soon as one finishes), each in its own kernel
with one thread, as nbdev-test runs two side by side; a finished lesson's kernel is shut down.
"""
import json, os, re, secrets, shutil, socket, subprocess, sys, time, urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser
ROOT = Path(__file__).resolve().parents[1]
SHOTS = ROOT / '.ci' / 'screenshots'
CHROMIUM = shutil.which('chromium') or shutil.which('chromium-browser')
REQUIRED = os.environ.get('TL_COURSE_BROWSER') == '1'
try: from playwright.sync_api import sync_playwright, expect
except ImportError: sync_playwright = None

if not (CHROMIUM and sync_playwright):
    why = 'needs Debian chromium (apt install chromium) and playwright (pip install playwright)'
    if REQUIRED: raise RuntimeError(f'TL_COURSE_BROWSER=1 but the browser test {why}')
    pytest.skip(why, allow_module_level=True)

sys.path.insert(0, str(Path(__file__).parent))
from widget_lessons import WIDGET_LESSONS, runnable_cells, widget_cell

LESSONS = WIDGET_LESSONS
TIMEOUT_MS = int(os.environ.get('TL_COURSE_BROWSER_TIMEOUT', 600)) * 1000 # one lesson, run whole


def test_every_lesson_with_a_widget_is_covered():
    uses = {p.name for p in (ROOT / 'nbs').glob('[0-9]*.ipynb') if 'ipywidgets' in p.read_text() or 'explorer(' in p.read_text()}
    assert uses and uses == {p.name for p in WIDGET_LESSONS}, f'a widget this test cannot find in {uses - {p.name for p in WIDGET_LESSONS}}'


def runnable(path, dest):
    "The lesson as nbdev-test runs it (see `runnable_cells`), without stored outputs or the hidden export cell."
    nb = json.loads(path.read_text())
    keep = [c for c in runnable_cells(path) if 'nbdev_export()' not in ''.join(c['source'])]
    for c in keep:
        if c['cell_type'] == 'code': c['outputs'], c['execution_count'] = [], None
        c['metadata'].pop('jupyter', None) # an exercise's folded solution shows no input prompt, which DONE reads
    dest.write_text(json.dumps({**nb, 'cells': keep}))


def free_port():
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


@pytest.fixture(scope='module')
def lab(tmp_path_factory):
    "A JupyterLab server on 127.0.0.1 with its own root, settings and workspaces, and a random token."
    tmp = tmp_path_factory.mktemp('lab')
    (tmp / 'nbs').mkdir()
    (tmp / 'bench').symlink_to(ROOT / 'bench') # lesson 07 reads ../bench/results
    for p in LESSONS: runnable(p, tmp / 'nbs' / p.name)
    settings = tmp / 'settings'
    for ext, values in {'@jupyterlab/apputils-extension/notification': {'fetchNews': 'false', 'checkForUpdates': False},
                        '@jupyterlab/notebook-extension/tracker': {'windowingMode': 'none'}}.items(): # every cell in the page
        f = settings / f'{ext}.jupyterlab-settings'
        f.parent.mkdir(parents=True, exist_ok=True); f.write_text(json.dumps(values))
    token, port = secrets.token_hex(16), free_port()
    from conftest import LEARNER_CACHE
    env = {k: v for k, v in os.environ.items() if k != 'TL_COURSE_CACHE'} # the lessons' cache is the learner's, not the tests'
    # the lessons' kernels run side by side: one thread each, not each as many as there are cores (they would thrash)
    env |= {'TF_NUM_INTRAOP_THREADS': '1', 'TF_NUM_INTEROP_THREADS': '1', 'OMP_NUM_THREADS': '1', 'OPENBLAS_NUM_THREADS': '1'}
    env |= {'JUPYTER_CONFIG_DIR': str(tmp / 'config'), 'JUPYTER_RUNTIME_DIR': str(tmp / 'runtime'), 'TF_CPP_MIN_LOG_LEVEL': '3',
            **({'TL_COURSE_CACHE': LEARNER_CACHE} if LEARNER_CACHE else {})}
    server = subprocess.Popen(
        [sys.executable, '-m', 'jupyter', 'lab', '--allow-root', '--no-browser', '--ServerApp.ip=127.0.0.1',
         f'--ServerApp.port={port}', f'--IdentityProvider.token={token}', f'--ServerApp.root_dir={tmp}',
         f'--LabApp.user_settings_dir={settings}', f'--LabApp.workspaces_dir={tmp / "workspaces"}'],
        env=env, stdout=subprocess.DEVNULL, stderr=open(tmp / 'server.log', 'w'))
    url = f'http://127.0.0.1:{port}'
    try:
        for _ in range(120):
            try: urllib.request.urlopen(f'{url}/api/status?token={token}', timeout=2); break
            except OSError: time.sleep(0.5)
        else: raise RuntimeError(f'JupyterLab did not start: {(tmp / "server.log").read_text()[-2000:]}')
        yield url, token
    finally:
        server.terminate()
        try: server.wait(20)
        except subprocess.TimeoutExpired: server.kill()


@pytest.fixture(scope='module')
def browser():
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=['--no-sandbox'])
        yield b
        b.close()


# Run All queues every cell at once and shows each queued one as [*]; it stops at the first cell that fails, leaving
# the cells after it at [ ] (JupyterLab shows the traceback as stderr, so the error itself has no mark of its own)
DONE = """() => { const p = [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')].map(e => e.textContent);
                 const idle = (document.querySelector('#jp-main-statusbar')?.textContent ?? '').includes('Idle');
                 return idle && p.some(t => /\\[\\d+\\]/.test(t)) && !p.some(t => t.includes('*')); }"""
UNRUN = """() => { const cells = [...document.querySelectorAll('.jp-Notebook .jp-CodeCell')];
                  const i = cells.findIndex(c => !/\\[\\d+\\]/.test(c.querySelector('.jp-InputPrompt')?.textContent ?? ''));
                  return i < 0 ? null : (cells[i - 1]?.querySelector('.jp-OutputArea')?.textContent ?? '').slice(-2000); }"""



def _kernels_down(url, token, name):
    "Shut down the kernel of the notebook `name` (closing its tab leaves it running)."
    api = lambda path, method='GET': urllib.request.urlopen(urllib.request.Request(f'{url}{path}?token={token}', method=method), timeout=10)
    for s in json.loads(api('/api/sessions').read()):
        if s.get('path', '').endswith(name): api(f"/api/sessions/{s['id']}", 'DELETE')


STARTED, ENDED = {}, {} # lesson -> when Run All was clicked, when it was seen finished (its line reports the seconds between)
# Seconds from Run All to the check in a CI run (two side by side, one thread each): the lessons start longest first,
# two at a time, the next as soon as one finishes, so that the last to run is a short one and no core waits long
# (in file order, with each lesson started only once the one before it was checked, the browser step took 421 s)
SECONDS_HINT = {'09_domains.ipynb': 108, '11_blog.ipynb': 105, '12_choosing.ipynb': 84, '07_train.ipynb': 82,
                '08_evaluate.ipynb': 73, '06_features.ipynb': 71, '10_transfer.ipynb': 93, '05_backbones.ipynb': 58, '03_data.ipynb': 46,
                '02_optim.ipynb': 31, '13_depth.ipynb': 75}
ORDER = sorted((p.name for p in LESSONS), key=lambda n: -SECONDS_HINT.get(n, 60)) # a new lesson: a guess of a minute

@pytest.fixture(scope='module')
def pages(lab, browser):
    """Each lesson opened in its own tab and told to run all its cells, two at a time in `ORDER`: `wait(name)` waits
    until that lesson has run every cell (or stopped at a failing one), starting the next lesson whenever one finishes."""
    url, token = lab
    opened, finished, queue = {}, set(), list(ORDER)
    def start(name):
        queue.remove(name)
        page = opened[name] = browser.new_page(viewport={'width': 1400, 'height': 1000})
        page.goto(f'{url}/lab/tree/nbs/{name}?token={token}&reset')
        expect(page.locator('#jp-main-statusbar')).to_contain_text('Idle', timeout=90_000) # the kernel has started
        page.locator('.lm-MenuBar-item', has_text='Run').first.click()
        page.locator('.lm-Menu-item', has_text='Run All Cells').first.click()
        STARTED[name] = time.monotonic()
    def poll():
        "Note which running lessons have finished; keep two running."
        for n, page in opened.items():
            if n not in finished and page.evaluate(DONE): finished.add(n); ENDED[n] = time.monotonic()
        while queue and sum(n not in finished for n in opened) < 2: start(queue[0])
    def wait(name, timeout):
        "The lesson's page once every cell ran (or the run stopped at a failing one), and stayed so for two seconds."
        page_of(name) # started, if it was still waiting its turn
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            poll()
            if name in finished:
                opened[name].wait_for_timeout(2000)
                if opened[name].evaluate(DONE): return opened[name]
                finished.discard(name)
            opened[name].wait_for_timeout(1000)
        raise TimeoutError(name)
    def page_of(name):
        if name in queue: start(name)
        return opened[name]
    def done(name):
        opened[name].close(); _kernels_down(url, token, name); poll()
    try: yield wait, page_of, done
    finally:
        for page in opened.values():
            if not page.is_closed(): page.close()


@pytest.mark.parametrize('lesson', ORDER)
def test_a_learner_moves_the_slider_and_the_figure_changes(pages, lesson):
    wait, page_of, done = pages
    SHOTS.mkdir(parents=True, exist_ok=True)
    stem = lesson.removesuffix('.ipynb')
    try: page = wait(lesson, TIMEOUT_MS / 1000)
    except TimeoutError:
        page = page_of(lesson)
        page.screenshot(path=SHOTS / f'{stem}-unfinished.png', full_page=True)
        prompts = page.locator('.jp-CodeCell .jp-InputPrompt').all_inner_texts()
        raise AssertionError(f'{lesson} did not finish in {TIMEOUT_MS // 1000} s: input prompts {prompts}; '
                             f'status bar {page.locator("#jp-main-statusbar").inner_text()!r}; screenshot {stem}-unfinished.png')
    failed = page.evaluate(UNRUN)
    if failed is not None: page.screenshot(path=SHOTS / f'{stem}-failed.png', full_page=True)
    assert failed is None, f'{lesson}: a cell failed and the cells after it did not run; its output ends:\n{failed}'
    expect(page.locator('#jp-main-statusbar')).to_contain_text('Idle', timeout=60_000)
    cell = page.locator('.jp-Notebook .jp-Cell').nth(widget_cell(ROOT / 'nbs' / lesson))
    widget = cell.locator('.widget-interact').first
    handle, readout = widget.locator('.widget-slider .noUi-handle').first, widget.locator('.widget-readout').first
    figure = widget.locator('.widget-output img')
    expect(figure).to_have_count(1, timeout=60_000) # the widget drew its figure
    widget.scroll_into_view_if_needed()
    before, value = figure.get_attribute('src'), readout.inner_text()
    widget.screenshot(path=SHOTS / f'{stem}-before.png')
    handle.focus(); handle.press('ArrowRight') # one step, as a learner's keyboard does it
    expect(readout).not_to_have_text(value, timeout=10_000)
    page.wait_for_function('([el, old]) => { const i = el.querySelector(".widget-output img"); return i && i.src !== old; }',
                           arg=[widget.element_handle(), before], timeout=60_000)
    after = figure.get_attribute('src')
    assert after != before and len(after) > 1000 # a new PNG, not an empty one
    widget.screenshot(path=SHOTS / f'{stem}-after.png')
    print(f'{lesson}: slider {value} -> {readout.inner_text()}, figure {len(before)} -> {len(after)} characters of PNG '
          f'({ENDED[lesson] - STARTED[lesson]:.0f} s from Run All to its last cell, beside another lesson)')
    done(lesson)
