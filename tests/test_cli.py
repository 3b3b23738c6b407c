"""The `devito-ml` command: train (the README's main job, shortened) and codegen."""

import json
import subprocess
import sys


def devito_ml(*arguments, timeout=900):
    return subprocess.run([sys.executable, '-m', 'devito_ml.cli', *arguments],
                          capture_output=True, text=True, timeout=timeout)


def test_train_writes_checkpoint_history_plot_and_code(tmp_path):
    """Piped, as here, the command shows no progress bar (one line an epoch), says
    when it builds operators, and writes the C of the operators it ran, no other."""
    run = devito_ml('train', '--model', 'lenet', '--dataset', 'digits', '--epochs', '2',
                    '--out', str(tmp_path), '--schedule', 'step', '--step-epochs', '1')
    assert run.returncode == 0, run.stderr
    assert 'test acc' in run.stdout and 'test accuracy' in run.stdout
    assert 'building the operators' in run.stdout and 'operators built in' in run.stdout
    assert '(step schedule)' in run.stdout
    assert '\r' not in run.stderr + run.stdout and 'img/s' not in run.stderr
    history = json.loads((tmp_path / 'history.json').read_text())['epochs']
    assert [entry['epoch'] for entry in history] == [1, 2]
    assert (tmp_path / 'history.png').read_bytes()[:4] == b'\x89PNG'
    assert (tmp_path / 'checkpoint.npz').exists()
    code = sorted(p.name for p in (tmp_path / 'code').iterdir())
    assert code == ['lenet5_evaluate.c', 'lenet5_train_adam.c']


def test_codegen_writes_the_generated_c(tmp_path):
    run = devito_ml('codegen', '--out', str(tmp_path), '--batch-size', '8')
    assert run.returncode == 0, run.stderr
    assert 'd loss / d conv1_W' in run.stdout
    assert 'conv1_dW' in (tmp_path / 'lenet5_backward.c').read_text()
    assert 'lenet5_train_adam' in (tmp_path / 'lenet5_train_adam.c').read_text()


def test_help_for_each_command():
    """Every option says what it is and, where it has one, its default."""
    import re
    for command in ('train', 'codegen', 'bench'):
        run = devito_ml(command, '--help')
        assert run.returncode == 0 and '--out' in run.stdout
        options = re.split(r'\n  (?=-)', run.stdout.split('options:')[1])[1:]
        for option in options:
            name = option.split()[0]
            assert len(option.split()) > 2, f"{command} {name} has no help"
            if name not in ('-h,', '--resume', '--no-progress', '--quick', '--only',
                            '--data-dir', '--sync-batchnorm'):
                assert '(default:' in ' '.join(option.split()), f"{command} {name}"
    assert 'cosine' in devito_ml('train', '--help').stdout
    assert '`' not in devito_ml('--help').stdout
    version = devito_ml('--version')
    assert version.returncode == 0 and re.match(r'devito-ml \d+\.\d+', version.stdout)


def test_bad_arguments_give_one_line_and_no_traceback(tmp_path):
    for arguments, message in ((('codegen', '--batch-size', '0'), '--batch-size'),
                               (('train', '--epochs', '0'), '--epochs'),
                               (('train', '--model', 'vgg'), 'invalid choice'),
                               (('train', '--dataset', 'mnist', '--out', str(tmp_path)),
                                '--data-dir'),
                               (('train', '--dataset', 'mnist', '--data-dir',
                                 str(tmp_path), '--out', str(tmp_path)),
                                'train-images-idx3-ubyte'),
                               (('train', '--dataset', 'fashion-mnist', '--data-dir',
                                 str(tmp_path), '--out', str(tmp_path)),
                                'apt-get install dataset-fashion-mnist'),
                               (('train', '--model', 'resnet18', '--width', '0'),
                                '--width')):
        run = devito_ml(*arguments)
        assert run.returncode != 0
        assert 'Traceback' not in run.stderr and message in run.stderr, run.stderr
        assert len(run.stderr.strip().splitlines()[-1]) > 0
