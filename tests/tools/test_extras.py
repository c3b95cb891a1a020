"""The tools' optional packages: `import timm_mod` needs none, and a tool missing one says which pip install fixes it.

A missing package is simulated as Python itself does for a blocked import: ``sys.modules[name] = None``.
"""
import pkgutil
import subprocess
import sys

import pytest
import timm

import timm_mod.tools
from timm_mod.tools import hub, report, selection
from timm_mod.tools.complexity import count_gmacs
from timm_mod.tools.train import UsageError, write_digits

# every package of timm-mod's extras that the library could be tempted to import
EXTRAS_PACKAGES = (
    'fvcore', 'iopath', 'jinja2', 'matplotlib', 'sklearn', 'torchmetrics', 'pycocotools', 'onnx', 'onnxruntime',
    'onnxscript', 'openvino', 'datasets', 'webdataset')
TOOLS = [m.name for m in pkgutil.iter_modules(timm_mod.tools.__path__)]


def _missing(monkeypatch, *names):
    for name in names:
        monkeypatch.setitem(sys.modules, name, None)


def test_import_timm_mod_and_every_tool_needs_no_extra():
    """The library and every tool module import with no extra installed (so each tool's --help runs), and a model
    builds and runs."""
    script = (
        'import sys, importlib\n'
        f'for name in {EXTRAS_PACKAGES!r}:\n'
        '    sys.modules[name] = None\n'
        'import timm, torch, timm_mod\n'
        'timm.create_model("resnet18_mod_cifar").eval()(torch.randn(1, 3, 32, 32))\n'
        'timm_mod.mod("resnet18")\n'
        f'for tool in {TOOLS!r}:\n'
        '    importlib.import_module("timm_mod.tools." + tool)\n'
        'importlib.import_module("timm_mod.dense")\n')
    proc = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_counting_macs_without_fvcore_names_the_extra(monkeypatch):
    _missing(monkeypatch, 'fvcore', 'fvcore.nn')
    with pytest.raises(ImportError, match=r'^counting MACs needs fvcore: pip install "timm-mod\[tools\]"$'):
        count_gmacs(timm.create_model('resnet18_mod_cifar'))


@pytest.mark.parametrize('package, module', [('jinja2', 'jinja2'), ('fvcore', 'fvcore.nn')])
def test_hub_export_without_a_tools_package_stops_first_naming_the_extra(package, module, monkeypatch, tmp_path,
                                                                        capsys):
    _missing(monkeypatch, package, module)
    out = tmp_path / 'out'
    with pytest.raises(SystemExit) as info:  # before the checkpoint is even looked for
        hub.main(['export', '--model', 'resnet18_mod_cifar', '--checkpoint', str(tmp_path / 'none.pth'),
                  '--out', str(out)])
    assert info.value.code == 2
    assert f'needs {package}: pip install "timm-mod[tools]"' in capsys.readouterr().err
    assert not out.exists()


def test_rendering_a_card_without_jinja2_names_the_extra(monkeypatch):
    _missing(monkeypatch, 'jinja2')
    with pytest.raises(ImportError, match=r'rendering the model card needs jinja2: pip install "timm-mod\[tools\]"'):
        hub.render_card('cifar.md')


def test_selection_without_matplotlib_stops_before_counting(monkeypatch, tmp_path, capsys):
    _missing(monkeypatch, 'matplotlib', 'matplotlib.pyplot')
    (tmp_path / 'data' / 'val' / 'a').mkdir(parents=True)
    monkeypatch.setattr(selection, 'count_selections', None)  # any counting fails
    with pytest.raises(SystemExit) as info:
        selection.main(['--model', 'resnet18_mod', '--data', str(tmp_path / 'data'), '--out', str(tmp_path / 'out')])
    assert info.value.code == 2
    assert 'drawing Figure 4 needs matplotlib: pip install "timm-mod[plot]"' in capsys.readouterr().err


def test_report_plot_without_matplotlib_stops_before_writing(monkeypatch, tmp_path, capsys):
    _missing(monkeypatch, 'matplotlib', 'matplotlib.pyplot')
    rows = tmp_path / 'bench.json'
    rows.write_text('[]')
    with pytest.raises(SystemExit) as info:
        report.main([str(rows), '--out', str(tmp_path / 'benchmarks.md'), '--plot', str(tmp_path / 'figures')])
    assert info.value.code == 2
    assert '--plot needs matplotlib: pip install "timm-mod[plot]"' in capsys.readouterr().err
    assert not (tmp_path / 'benchmarks.md').exists()
    with pytest.raises(ImportError, match=r'drawing Figure 3 needs matplotlib: pip install "timm-mod\[plot\]"'):
        report.plot_figure3([], str(tmp_path / 'figures'))


def test_digits_preset_without_scikit_learn_names_the_extra(monkeypatch, tmp_path):
    _missing(monkeypatch, 'sklearn', 'sklearn.datasets')
    with pytest.raises(UsageError, match=r'digits preset needs scikit-learn .*: pip install "timm-mod\[train\]"$'):
        write_digits(tmp_path / 'digits')
    assert not (tmp_path / 'digits').exists()
