"The tl-course command: real subprocess runs for exit codes and output, in-process runs for the rest."
import dataclasses, json, os, subprocess, sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tl_course import cli

CATS = {281, 282, 285}


@pytest.fixture(scope='module')
def photo_dir(tmp_path_factory):
    from skimage import data
    d = tmp_path_factory.mktemp('photos')
    Image.fromarray(data.chelsea()).save(d / 'chelsea.png')
    Image.fromarray(data.coffee()).save(d / 'coffee.jpg', quality=92)
    (d / 'notes.txt').write_text('not an image')
    return d


def run(*args, cwd, env=None):
    exe = Path(sys.executable).with_name('tl-course')
    cmd = [str(exe)] if exe.exists() else [sys.executable, '-c', 'import sys; from tl_course.cli import main; sys.exit(main())']
    env = env or {k: v for k, v in os.environ.items() if k != 'TF_CPP_MIN_LOG_LEVEL'} # as a user's shell has it
    return subprocess.run(cmd + list(args), cwd=cwd, capture_output=True, text=True, timeout=300, env=env)


def test_predict_json_puts_a_cat_first(photo_dir):
    # with the log level a user may have set: absl's and oneDNN's start-up notices print whatever it says
    r = run('predict', 'chelsea.png', 'coffee.jpg', '--json', cwd=photo_dir, env={**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '3'})
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert [o['file'] for o in out] == ['chelsea.png', 'coffee.jpg']
    assert out[0]['predictions'][0]['index'] in CATS
    assert sum(p['prob'] for p in out[0]['predictions'] if p['index'] in CATS) >= 0.85
    assert out[1]['predictions'][0]['name'] == 'espresso'
    assert [p['rank'] for p in out[0]['predictions']] == [1, 2, 3, 4, 5]
    assert set(out[0]['predictions'][0]) == {'rank', 'index', 'wnid', 'name', 'prob'}
    assert r.stderr == ''  # TensorFlow's start-up lines are kept off the terminal (the command's own output only)


@pytest.mark.parametrize('bad,why', [('missing.jpg', 'no such file'), ('notes.txt', 'not a readable image')])
def test_bad_file_one_line_exit_2(photo_dir, bad, why):
    r = run('predict', 'chelsea.png', bad, cwd=photo_dir)
    assert r.returncode == 2
    assert r.stdout == ''
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('tl-course: error: ') and bad in lines[0] and why in lines[0]


def test_no_tensorflow_on_the_jax_backend(photo_dir):
    code = ('import sys; from tl_course.cli import main; rc = main(["predict", "chelsea.png", "--top", "1"]); '
            'print("TF", "tensorflow" in sys.modules); sys.exit(rc)')
    r = subprocess.run([sys.executable, '-c', code], cwd=photo_dir, capture_output=True, text=True, timeout=300,
                       env={**os.environ, 'KERAS_BACKEND': 'jax'})
    assert r.returncode == 0, r.stderr
    assert 'TF False' in r.stdout and 'tiger_cat' in r.stdout


def test_predict_table_and_top(photo_dir, capsys, monkeypatch):
    monkeypatch.chdir(photo_dir)
    assert cli.main(['predict', 'coffee.jpg', '--top', '3']) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == 'coffee.jpg' and len(out) == 4 and out[1].split()[:2] == ['1.', 'espresso']


@pytest.mark.parametrize('args,msg', [(['--top', '0'], '--top'), (['--backbone', 'resnet5'], 'Unknown backbone')])
def test_bad_arguments_exit_2(photo_dir, capsys, monkeypatch, args, msg):
    monkeypatch.chdir(photo_dir)
    assert cli.main(['predict', 'chelsea.png'] + args) == 2
    assert msg in capsys.readouterr().err


def test_offline_keras_backbone_exit_1(photo_dir, capsys, monkeypatch, tmp_path, closed_port):
    from tl_course import backbones as B
    spec = dataclasses.replace(B.backbone_spec('resnet50'),
                               weights_files=B._files(f'http://127.0.0.1:{closed_port}/', 'r.h5', 'r_notop.h5'))
    monkeypatch.setitem(B.BACKBONES, 'resnet50', spec)
    monkeypatch.setenv('KERAS_HOME', str(tmp_path))
    monkeypatch.chdir(photo_dir)
    assert cli.main(['predict', 'chelsea.png', '--backbone', 'resnet50']) == 1
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and 'r.h5' in err and str(tmp_path) in err


def demo_run(out, capsys, epochs):
    """Runs `tl-course demo --out OUT` and checks what every run must hold, whatever its recipe: the progress lines, demo.json,
    predictions.json, the fine-tuning run, the summary, and report.html with every figure inline. Returns demo.json's content."""
    import base64, html.parser, io
    assert cli.main(['demo', '--out', str(out)]) == 0
    text, err = capsys.readouterr()
    # a progress line as each stage begins, and one per epoch of fine-tuning (the head, then the recipe's epochs)
    assert [l[:5] for l in err.splitlines() if l.startswith('[')] == ['[1/4]', '[2/4]', '[3/4]', '[4/4]']
    assert sum(l.strip().startswith('phase') and 'epoch' in l for l in err.splitlines()) == 1 + epochs
    res = json.loads((out / 'demo.json').read_text())
    assert [r['file'] for r in res['photos']] == ['chelsea', 'coffee', 'rocket', 'astronaut', 'motorcycle']
    assert res['photos'][0]['predictions'][0]['index'] in CATS and 'espresso' in text
    assert json.loads((out / 'predictions.json').read_text()) == res['photos']
    r = res['recipe']
    assert (res['n_train'], res['n_test']) == (10 * r['per_class'], r['n_test']) and np.sum(res['confusion_matrix']) == r['n_test']
    ft = json.loads((out / 'finetune' / 'metrics.json').read_text())
    assert ft['accuracy'] == pytest.approx(res['accuracy_fine_tuned']) and ft['mirror'] is False and (out / 'finetune' / 'model.keras').exists()
    for k in ('accuracy_raw_pixels', 'accuracy_probe', 'accuracy_fine_tuned'): assert f'{res[k]:.1%}' in text
    # the report: every figure inline, each the same PNG as the file beside it, a real picture, and no link to another file
    class Page(html.parser.HTMLParser):
        def __init__(self): super().__init__(); self.imgs, self.links, self.h2 = [], [], 0
        def handle_starttag(self, tag, attrs):
            a = dict(attrs); self.h2 += tag == 'h2'
            if tag == 'img': self.imgs.append(a['src'])
            self.links += [v for k, v in attrs if k in ('href', 'src') and not v.startswith('data:image/png;base64,')]
    page = Page(); doc = (out / 'report.html').read_text(); page.feed(doc)
    assert page.links == [] and page.h2 == 6 and len(page.imgs) == len(res['figures']) == 7
    for src, name in zip(page.imgs, ['gains.png', 'predictions.png', 'learning_curves.png', 'confusion_matrix.png',
                                     'reliability.png', 'mistakes.png', 'gradcam.png']):
        png = base64.b64decode(src.split(',', 1)[1])
        assert png == (out / name).read_bytes(), name
        img = np.asarray(Image.open(io.BytesIO(png)).convert('L'), np.float64)
        assert min(img.shape) > 150 and img.std() > 10, name # a drawn figure, not a blank canvas
    for k in ('accuracy_raw_pixels', 'accuracy_probe', 'accuracy_head_alone', 'accuracy_fine_tuned'): assert f'{res[k]:.1%}' in doc
    return res


@pytest.mark.slow_on_jax
def test_demo_writes_its_whole_report(tmp_path, capsys, monkeypatch):
    "Every stage, file and figure of the demo, on a recipe small enough for CI (100 digits, 200 test digits, 2 epochs at 32 px)."
    import tl_course.demo
    monkeypatch.setattr(tl_course.demo, 'DEMO_RECIPE', {**tl_course.demo.DEMO_RECIPE, 'per_class': 10, 'n_test': 200,
                                                        'fine_size': 32, 'epochs_fine': 2})
    res = demo_run(tmp_path / 'demo', capsys, epochs=2)
    assert res['recipe']['fine_size'] == 32 and res['n_train'] == 100
    assert res['accuracy_probe'] > 0.5 # ten classes: chance is 10 %


@pytest.mark.slow
def test_demo_every_stage_gains(tmp_path, capsys):
    """The default demo, as a newcomer runs it: each stage beats the one before on the same test digits. About three minutes
    on two cores, so `.ci/test` leaves it out (`pytest -m slow` runs it); `nbs/reference/demo.ipynb` holds the same run's output."""
    res = demo_run(tmp_path / 'demo', capsys, epochs=8)
    assert (res['n_train'], res['n_test']) == (500, 1000)
    # the point of the demo: each stage's gain, paired interval clear of zero
    assert res['gain_probe_over_pixels_95'][0] > 0 and res['gain_fine_tuned_over_probe_95'][0] > 0
    assert res['accuracy_raw_pixels'] < res['accuracy_probe'] < res['accuracy_fine_tuned']
    assert res['accuracy_head_alone'] < res['accuracy_fine_tuned'] - 0.03 # fine-tuning's gain over the head it started from


def test_help_lists_the_registry():
    from tl_course.backbones import list_backbones
    assert cli._NAMES.split(', ') == list_backbones()


def test_fit_help_states_the_phase_2_threshold(capsys):
    from tl_course.train import FINE_TUNE_MIN_PER_CLASS
    with pytest.raises(SystemExit): cli.main(['fit', '--help'])
    assert f'at least {FINE_TUNE_MIN_PER_CLASS} training images' in ' '.join(capsys.readouterr().out.split())


@pytest.fixture(scope='module')
def digit_dirs(tmp_path_factory):
    "MNIST-5k digits as PNG folders: train/val splits of 3 classes, a flat folder, and a val folder with a class too many."
    from tl_course.data import get_dataset
    d, root = get_dataset('mnist5k'), tmp_path_factory.mktemp('digits')
    def save(folder, c, sl):
        (folder / c).mkdir(parents=True, exist_ok=True)
        for i in np.flatnonzero(d.y == int(c))[sl]: Image.fromarray(d.x[i]).save(folder / c / f'{i}.png')
    for c in '027':
        save(root / 'split' / 'train', c, slice(0, 15)); save(root / 'split' / 'val', c, slice(15, 35))
        save(root / 'flat', c, slice(0, 20)); save(root / 'valdir', c, slice(30, 36))
    save(root / 'extra', '0', slice(40, 42)); save(root / 'extra', '9', slice(0, 2))
    return root


def test_probe_json(digit_dirs, tmp_path, capsys, monkeypatch):
    # in this process: the command's own stdout and stderr in a subprocess are checked by test_predict_json_puts_a_cat_first
    monkeypatch.chdir(digit_dirs); monkeypatch.setenv('TL_COURSE_CACHE', str(tmp_path))
    assert cli.main(['probe', 'split', '--no-mirror', '--json']) == 0
    out = json.loads(capsys.readouterr().out)
    assert {'accuracy', 'n_train', 'n_val', 'classes', 'seconds'} <= set(out)
    assert (out['n_train'], out['n_val'], out['classes']) == (45, 60, ['0', '2', '7'])
    # 15 labelled digits per class: about 85 % is what the features give (tl-course demo's probe measures 85 % on 1,000 test
    # digits with 20 per class); chance is 33 %
    assert out['accuracy'] >= 0.75 and out['seconds'] > 0 and out['evaluated_on'] == 'its val split'


def test_probe_text_val_dir_and_pca(digit_dirs, capsys, monkeypatch):
    monkeypatch.chdir(digit_dirs)
    assert cli.main(['probe', 'flat', '--val-dir', 'valdir', '--pca', '8', '--no-flip']) == 0
    out = capsys.readouterr().out
    assert 'PCA to 8' in out and 'on 18 images: from valdir' in out and 'trained on 60 images of 3 classes' in out


def test_probe_layers_all_prints_the_curve(digit_dirs, capsys, monkeypatch, tmp_path):
    "`--layers all`: a line per stage output and one for the head, each with its accuracy on the val split and its CV."
    from tl_course.registry import get_backbone, stage_outputs
    monkeypatch.chdir(digit_dirs); monkeypatch.setenv('TL_COURSE_CACHE', str(tmp_path))
    assert cli.main(['probe', 'split', '--no-mirror', '--layers', 'all']) == 0
    out = capsys.readouterr().out
    curve = out.split('the layer-transferability curve')[1].splitlines()[1:]
    names = ['head'] + stage_outputs(get_backbone('efficientnet_lite0'))
    assert [l.split()[0] for l in curve[:len(names)]] == names and all('% of' not in l and '(CV ' in l for l in curve[:len(names)])
    assert 'on 60 images: its val split' in out


def test_probe_backbone_all_has_a_row_per_backbone(digit_dirs, capsys, monkeypatch, tmp_path):
    "`--backbone all`: each registry backbone in turn, the same accuracy as probing it alone; one without weights is skipped, said why."
    import tl_course.registry as registry
    monkeypatch.chdir(digit_dirs); monkeypatch.setenv('TL_COURSE_CACHE', str(tmp_path))
    monkeypatch.setattr(registry, 'list_backbones', lambda: ['efficientnet_lite0', 'vgg16']) # two, to keep it short
    def unavailable(spec, *a, **kw): raise registry.WeightsUnavailable(f'{spec.name}: no weights here (test)\nput them ...')
    monkeypatch.setattr(registry, 'imagenet_weights_path', unavailable)
    assert cli.main(['probe', 'split', '--no-mirror', '--backbone', 'all', '--json']) == 0
    rows = json.loads(capsys.readouterr().out)['backbones']
    assert [r['backbone'] for r in rows] == ['efficientnet_lite0', 'vgg16']
    assert rows[1] == {'backbone': 'vgg16', 'skipped': 'vgg16: no weights here (test)'}
    assert cli.main(['probe', 'split', '--no-mirror', '--json']) == 0 # Lite0 alone: the same probe, the same number
    alone = json.loads(capsys.readouterr().out)
    assert rows[0]['accuracy'] == alone['accuracy'] and rows[0]['parameters'] > 3_000_000
    assert cli.main(['probe', 'split', '--no-mirror', '--backbone', 'all']) == 0
    lines = capsys.readouterr().out.splitlines()
    assert 'best first' in lines[0] and lines[2].split()[0] == 'efficientnet_lite0' and f'{alone["accuracy"]:.1%}' in lines[2]
    assert lines[3].split()[:2] == ['vgg16', 'skipped:']


def test_backbone_all_is_for_probe_only(capsys):
    assert cli.main(['fit', 'nowhere', '--backbone', 'all']) == 2 # refused before any folder is read or TensorFlow starts
    assert "Unknown backbone 'all'" in capsys.readouterr().err


def test_probe_holds_out_a_share_when_there_is_no_val_split(digit_dirs, capsys, monkeypatch):
    monkeypatch.chdir(digit_dirs)
    # --layers head: this test is about the split; the default's choice among the stages is test_probe_json's
    assert cli.main(['probe', 'flat', '--no-flip', '--lda', '--layers', 'head', '--json']) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out['n_train'], out['n_val']) == (48, 12) and '20%' in out['evaluated_on'] and out['features'] == 2
    assert cli.main(['probe', 'flat', '--no-flip', '--val-split', '0.5', '--layers', 'head', '--json']) == 0
    assert json.loads(capsys.readouterr().out)['n_val'] == 30


@pytest.mark.parametrize('args,msg', [
    (['flat', '--val-dir', 'extra'], "classes ['9'] are not in flat"),
    (['split', '--val-dir', 'valdir'], 'has its own val split'),
    (['flat', '--pca', '0'], '--pca must be at least 1'),
    (['nowhere'], 'nowhere: no such folder'),
    (['flat', '--backbone', 'resnet5'], 'Unknown backbone'),
    (['split', '--layers', 'block99_add'], "--layers: Expected layers to be 'auto', 'all', 'head', 'cut' or names")])
def test_probe_bad_input_exit_2(digit_dirs, capsys, monkeypatch, args, msg):
    monkeypatch.chdir(digit_dirs)
    assert cli.main(['probe'] + args) == 2
    assert msg in capsys.readouterr().err


def test_probe_pca_and_lda_exclude_each_other(digit_dirs, monkeypatch):
    monkeypatch.chdir(digit_dirs)
    with pytest.raises(SystemExit) as e: cli.main(['probe', 'flat', '--pca', '4', '--lda'])
    assert e.value.code == 2


@pytest.fixture(scope='module')
def digit_run(digit_dirs, tmp_path_factory):
    "One `tl-course fit` of the digits at 32 px (head, then one phase-2 epoch), in this process: (run folder, its JSON, its stderr, its arguments, its cache)."
    import contextlib, io
    tmp = tmp_path_factory.mktemp('digit_run')
    args = ['fit', 'split', '--input-size', '32', '--epochs-fine', '1', '--no-flip', '--out', str(tmp / 'run'), '--json']
    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        mp.chdir(digit_dirs); mp.setenv('TL_COURSE_CACHE', str(tmp / 'cache'))
        rc = cli.main(args)
    assert rc == 0, err.getvalue()[-2000:]
    return tmp / 'run', json.loads(out.getvalue()), err.getvalue(), args, tmp / 'cache'


@pytest.mark.slow_on_jax
@pytest.mark.xdist_group('digit_run') # the run is made once, for this test and the export test
def test_fit_json_writes_the_run_and_a_second_call_does_not_train_again(digit_dirs, digit_run, tmp_path, capsys, monkeypatch):
    run_dir, out, err, args, cache = digit_run
    assert {'accuracy', 'n_train', 'n_val', 'seconds'} <= set(out) and (out['n_train'], out['n_val']) == (45, 60)
    assert out['accuracy'] >= 0.6 and out['epochs'] == 2 and out['evaluated_on'] == 'its val split'
    assert out['mirror'] is False and 'accuracy_single_view' not in out # --no-flip (the old name of --no-mirror): digits are not mirror images of each other
    assert 'epoch 1 (head fitted exactly)' in err and 'epoch 2 (phase 2' in err
    assert {'model.keras', 'checkpoint.npz', 'history.csv', 'metrics.json', 'learning_curves.png'} <= {p.name for p in run_dir.iterdir()}
    # a second call finds the finished run and does not train again
    monkeypatch.chdir(digit_dirs); monkeypatch.setenv('TL_COURSE_CACHE', str(cache))
    assert cli.main(list(args)) == 0
    again = capsys.readouterr()
    assert 'epoch' not in again.err.replace('fine-tuning', '') and json.loads(again.out)['accuracy'] == out['accuracy']
    # `tl-course evaluate` on the run measures what the run measured, and writes its figures
    assert cli.main(['evaluate', str(run_dir), 'split', '--json', '--out', str(tmp_path / 'report')]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev['accuracy'] == pytest.approx(out['accuracy'], abs=1e-12) and ev['split'] == 'val' and ev['classes'] == ['0', '2', '7']
    assert np.sum(ev['confusion_matrix']) == out['n_val'] and {'precision_macro', 'recall_macro', 'f1_macro', 'per_class'} <= set(ev)
    assert {'metrics.json', 'confusion_matrix.png', 'reliability.png', 'mistakes.png'} <= {p.name for p in (tmp_path / 'report').iterdir()}
    assert cli.main(['evaluate', str(run_dir), 'extra']) == 2 # another set of classes
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and "classes ['0', '9'] are not the model's" in err


@pytest.mark.xdist_group('digit_run')
def test_export_int8_checked_then_read_by_evaluate_and_predict(digit_dirs, digit_run, tmp_path, capsys, monkeypatch):
    "`tl-course export`: a fit run to int8 TFLite (calibrated on the run's own training images, found through its metrics.json), checked against Keras; the file then goes through `evaluate` and `predict --model`."
    import shutil
    run_dir = shutil.copytree(digit_run[0], tmp_path / 'run') # a copy: this test rewrites its metrics.json
    fitted = digit_run[1]
    monkeypatch.setenv('TL_COURSE_CACHE', str(digit_run[4]))
    assert json.loads((run_dir / 'metrics.json').read_text())['data_dir'] == str((digit_dirs / 'split').resolve())
    monkeypatch.chdir(tmp_path) # the run recorded where its data is: no --data needed
    assert cli.main(['export', str(run_dir), '--int8', '--json']) == 0
    ex = json.loads(capsys.readouterr().out)
    f = run_dir / 'model_int8.tflite'
    assert ex['file'] == str(f) and f.exists() and json.loads((run_dir / 'model_int8.tflite.json').read_text())['classes'] == ['0', '2', '7']
    keras_row, lite = ex['check']
    assert keras_row['format'] == 'keras' and keras_row['accuracy'] == pytest.approx(fitted['accuracy'], abs=1e-12)
    assert lite['format'] == 'tflite int8' and lite['n'] == 60 and lite['MB'] < keras_row['MB'] / 2
    assert lite['agreement'] >= 0.8 and lite['max_prob_diff'] < 0.3 and lite['ms_per_image'] > 0
    # the deployed file, measured by the same commands as the Keras model
    assert cli.main(['evaluate', str(f), str(digit_dirs / 'split'), '--json']) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev['accuracy'] == pytest.approx(lite['accuracy'], abs=1e-12) and np.sum(ev['confusion_matrix']) == 60
    digit = sorted((digit_dirs / 'split' / 'val' / '7').iterdir())[0]
    assert cli.main(['predict', str(digit), '--model', str(f), '--top', '3', '--json']) == 0
    pred = json.loads(capsys.readouterr().out)[0]['predictions']
    assert sorted(p['name'] for p in pred) == ['0', '2', '7'] and sum(p['prob'] for p in pred) == pytest.approx(1, abs=3 / 512) # int8 probabilities: steps of 1/256, each rounded
    # --format keras never writes over the run's own model
    before = (run_dir / 'model.keras').read_bytes()
    assert cli.main(['export', str(run_dir), '--format', 'keras', '--no-check']) == 0
    assert (run_dir / 'model_export.keras').exists() and (run_dir / 'model.keras').read_bytes() == before
    assert 'not checked (--no-check)' in capsys.readouterr().out
    tops = []
    for m in (run_dir, run_dir / 'model_export.keras'): # the run folder, and its copy with the classes in the JSON beside it
        assert cli.main(['predict', str(digit), '--model', str(m), '--top', '3', '--json']) == 0
        tops.append(json.loads(capsys.readouterr().out)[0]['predictions'])
    assert tops[0] == tops[1]
    # what cannot be done is said in one line, exit status 2
    for args, msg in [(['export', str(run_dir / 'model.keras'), '--int8'], '--int8 calibrates on training images: give --data'),
                      (['export', str(f)], 'already an exported tflite model'),
                      (['export', str(run_dir), '--data', 'nowhere'], 'nowhere: the data folder is not here; give it with --data DATA_DIR\n'),
                      (['export', str(run_dir), '--out', str(tmp_path / 'notes.pdf')], 'a tflite file is named *.tflite'),
                      (['export', str(run_dir / 'model_savedmodel')], 'no such run folder'),
                      (['explain', str(f), str(digit)], 'Grad-CAM needs the gradients of the Keras model'),
                      (['evaluate', str(tmp_path / 'missing.onnx'), str(digit_dirs / 'split')], 'missing.onnx: no such')]:
        assert cli.main(args) == 2, args
        err = capsys.readouterr().err
        assert err.count('\n') == 1 and msg in err, err
    # a run whose data folder has moved: still exported, and the reason it was not checked is said
    metrics = json.loads((run_dir / 'metrics.json').read_text())
    (run_dir / 'metrics.json').write_text(json.dumps({**metrics, 'data_dir': str(tmp_path / 'moved')}))
    assert cli.main(['export', str(run_dir), '--format', 'keras', '--out', str(tmp_path / 'again.keras')]) == 0
    assert 'moved, is not here; --data DATA_DIR gives it' in capsys.readouterr().out


def test_explain_json_and_overlays(photo_dir, capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(photo_dir)
    assert cli.main(['explain', 'efficientnet_lite0', 'chelsea.png', 'coffee.jpg', '--json', '--out', str(tmp_path)]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r['file'] for r in rows] == ['chelsea.png', 'coffee.jpg'] and rows[1]['class'] == 'espresso'
    assert rows[0]['class_index'] in CATS
    for r in rows:
        assert 0 <= r['deletion_salient'] <= 1 and 0 <= r['deletion_random'] <= 1 and Path(r['overlay']).exists()
    assert rows[1]['deletion_salient'] < rows[1]['deletion_random'] # the cup matters more than random blobs
    assert cli.main(['explain', 'efficientnet_lite0', 'coffee.jpg', '--class', 'tabby', '--json']) == 0
    assert json.loads(capsys.readouterr().out)[0]['class'] == 'tabby'
    for args, msg in [(['efficientnet_lite0', 'notes.txt'], 'notes.txt'), (['nowhere.keras', 'chelsea.png'], 'nowhere.keras: not a backbone name'),
                      (['efficientnet_lite0', 'chelsea.png', '--class', 'unicorn'], "'unicorn' is neither")]:
        assert cli.main(['explain'] + args) == 2
        err = capsys.readouterr().err
        assert err.count('\n') == 1 and msg in err, err


@pytest.mark.parametrize('args,msg', [
    (['flat', '--epochs-head', '0'], '--epochs-head must be at least 1'),
    (['flat', '--val-dir', 'extra'], "classes ['9'] are not in flat"),
    (['nowhere'], 'nowhere: no such folder')])
def test_fit_bad_input_exit_2(digit_dirs, capsys, monkeypatch, args, msg):
    monkeypatch.chdir(digit_dirs)
    assert cli.main(['fit'] + args) == 2
    assert msg in capsys.readouterr().err


def test_fit_names_an_unreadable_checkpoint(digit_dirs, capsys, monkeypatch, tmp_path):
    from tl_course.train import CHECKPOINT
    monkeypatch.chdir(digit_dirs)
    (tmp_path / 'run').mkdir()
    (tmp_path / 'run' / CHECKPOINT).write_bytes(b'not a checkpoint')
    assert cli.main(['fit', 'split', '--input-size', '32', '--out', str(tmp_path / 'run')]) == 2
    assert 'checkpoint.npz: not a readable checkpoint' in capsys.readouterr().err


def test_a_bad_backbone_is_refused_before_tensorflow_starts(tmp_path):
    code = ('import sys; from tl_course.cli import main; s = main(["probe", ".", "--backbone", "resnet5O"]); '
            'print(s, "tensorflow" in sys.modules, "keras" in sys.modules)')
    r = subprocess.run([sys.executable, '-c', code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.stdout.split() == ['2', 'False', 'False'], r.stdout + r.stderr
    assert r.stderr.count('\n') == 1 and "Unknown backbone 'resnet5O'" in r.stderr


def test_nbdev_test_is_also_spelled_with_an_underscore():
    "Older nbdev documentation says `nbdev_test`: the package installs it as an alias of `nbdev-test`."
    exe = Path(sys.executable).with_name('nbdev_test')
    assert exe.exists(), 'reinstall the package (pip install -e .) to get the nbdev_test alias'
    r = subprocess.run([str(exe), '--help'], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and '--flags' in r.stdout


def test_the_library_and_the_command_need_none_of_the_course_extra():
    "pandas, ipywidgets, jupyterlab and nbdev are the notebooks' (the `course` extra): every module imports without them."
    code = ('import sys, pkgutil, importlib\n'
            'for m in ("pandas", "ipywidgets", "jupyterlab", "nbdev"): sys.modules[m] = None # importing it now fails\n'
            'import tl_course\n'
            'for m in pkgutil.iter_modules(tl_course.__path__): importlib.import_module(f"tl_course.{m.name}")\n'
            'from tl_course.cli import main; print(main(["inspect", "."]))')
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=300,
                       env={**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '3'})
    assert r.returncode == 0, r.stderr[-2000:]
