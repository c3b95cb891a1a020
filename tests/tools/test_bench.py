"""The benchmark, the report / Figure 3, and the channel-selection analysis, end to end on tiny settings."""
import csv
import json

import pytest
import timm
import torch
from PIL import Image

from torch.utils import benchmark

from tiers import slow_cases
from timm_mod import MoDBlock, mod
from timm_mod.tools import bench, breakdown, report, selection

FIELDS = ('model', 'baseline', 'device', 'threads', 'batch_size', 'img_size', 'params_m', 'gmacs', 'latency_ms',
          'latency_iqr_ms', 'speedup', 'train_img_s', 'train_speedup')


@pytest.fixture(scope='module')
def bench_rows(tmp_path_factory):
    path = tmp_path_factory.mktemp('bench') / 'rows.json'
    bench.main(['--models', 'resnet18_mod_cifar', '--threads', '1', '--batch-size', '1,2', '--min-run-time', '0',
                '--rounds', '1', '--bound', '--json', str(path)])
    return json.loads(path.read_text())


def test_bench_json_has_every_field_for_every_model_and_setting(bench_rows):
    for row in bench_rows:
        missing = [f for f in FIELDS if f not in row]
        assert not missing, (row['model'], missing)
    models = {r['model'] for r in bench_rows}
    assert models == {'resnet18_cifar', 'resnet18_mod_cifar', 'resnet18_mod_cifar[bound]'}
    assert {r['batch_size'] for r in bench_rows} == {1, 2}


def test_interleaved_times_every_model_in_each_round():
    calls = []
    timed = bench.interleaved({'a': lambda: calls.append('a'), 'b': lambda: calls.append('b')}, 1, 'l', 'd',
                              rounds=3, min_run_time=0)
    # each round runs a's block (estimate + timing) and then b's: three a-b alternations in all
    runs = [name for i, name in enumerate(calls) if i == 0 or calls[i - 1] != name]
    assert runs == ['a', 'b'] * 3
    assert {m.task_spec.sub_label for m in timed.values()} == {'a', 'b'}
    assert all(len(m.times) >= 3 for m in timed.values())


def test_bench_rows_report_the_timed_latencies_and_their_ratio(monkeypatch):
    """With the timer replaced by one that reports fixed times, every number of a row is known by hand."""
    times = {('inference (ms)', 'resnet18_cifar'): 3e-3, ('inference (ms)', 'resnet18_mod_cifar'): 2e-3,
             ('train step (ms)', 'resnet18_cifar'): 8e-3, ('train step (ms)', 'resnet18_mod_cifar'): 5e-3}

    def fixed(fns, threads, label, description, rounds, min_run_time):
        return {name: benchmark.Measurement(
            number_per_run=1, raw_times=[times[(label, name)]] * 3, task_spec=benchmark.TaskSpec(
                stmt='fn()', setup='pass', label=label, sub_label=name, description=description,
                num_threads=threads)) for name in fns}

    monkeypatch.setattr(bench, 'interleaved', fixed)
    rows, _ = bench.run_bench(['resnet18_mod_cifar'], threads=[1], batch_sizes=[2], gmacs=False, rounds=1)
    by = {r['model']: r for r in rows}
    assert by['resnet18_cifar']['latency_ms'] == pytest.approx(3.0)
    mod_row = by['resnet18_mod_cifar']
    assert (mod_row['latency_ms'], mod_row['speedup']) == (pytest.approx(2.0), pytest.approx(1.5))
    assert (mod_row['throughput_img_s'], mod_row['train_img_s']) == (pytest.approx(1000.0), pytest.approx(400.0))
    assert mod_row['train_speedup'] == pytest.approx(1.6)
    assert '| resnet18_mod_cifar | resnet18_cifar |' in bench.markdown_table(rows)


def test_bound_has_no_mod_blocks_and_fewer_params(bench_rows):
    by = {(r['model'], r['batch_size']): r for r in bench_rows}
    assert by[('resnet18_mod_cifar[bound]', 1)]['params_m'] < by[('resnet18_mod_cifar', 1)]['params_m']


def test_bench_refuses_unknown_models_and_existing_results(tmp_path):
    with pytest.raises(SystemExit):
        bench.main(['--models', 'resnet18_modd'])
    _refuses_to_overwrite(bench.main, ['--models', 'resnet18_mod_cifar', '--json'], tmp_path / 'done.json')


def _refuses_to_overwrite(main, args, existing):
    existing.write_text('keep')
    with pytest.raises(SystemExit):
        main(args + [str(existing)])
    assert existing.read_text() == 'keep'


def test_report_renders_tables_and_figure3(bench_rows, tmp_path):
    text = report.render_markdown(bench_rows)
    assert '| resnet18_mod_cifar | resnet18_cifar |' in text
    assert text.count('### PyTorch eager, CPU') == 2  # one table per batch size
    paths = report.plot_figure3(bench_rows, str(tmp_path))
    assert paths and all(Image.open(p).format == 'PNG' and min(Image.open(p).size) > 200 for p in paths)


@pytest.fixture()
def image_folder(tmp_path):
    gen = torch.Generator().manual_seed(0)
    for c in range(3):
        folder = tmp_path / 'data' / 'val' / f'class{c}'
        folder.mkdir(parents=True)
        for i in range(4):
            pixels = (torch.rand(32, 32, 3, generator=gen) * 255).to(torch.uint8).numpy()
            Image.fromarray(pixels).save(folder / f'{i}.png')
    return tmp_path / 'data'


def test_selection_writes_counts_and_figure(image_folder, tmp_path):
    out = tmp_path / 'sel'
    selection.main(['--model', 'resnet18_mod', '--data', str(image_folder), '--out', str(out), '--img-size', '32',
                    '--samples-per-class', '3'])
    rows = list(csv.reader(open(out / 'selection.csv')))
    assert rows[0][:3] == ['class', 'samples', 'ch0'] and len(rows[0]) == 2 + 256
    assert [r[0] for r in rows[1:]] == ['class0', 'class1', 'class2', 'all']
    for r in rows[1:4]:
        assert int(r[1]) == 3 and sum(map(int, r[2:])) == 3 * 4  # k = 256 // 64 channels per sample
    assert Image.open(out / 'selection.png').format == 'PNG'
    with pytest.raises(SystemExit):  # never overwrites
        selection.main(['--model', 'resnet18_mod', '--data', str(image_folder), '--out', str(out)])


def test_selection_refuses_random_routing_and_unknown_blocks(image_folder, tmp_path, capsys):
    with pytest.raises(SystemExit):
        selection.main(['--model', 'resnet50_mod_rand', '--data', str(image_folder), '--out', str(tmp_path / 'a')])
    assert 'routes at random' in capsys.readouterr().err
    with pytest.raises(SystemExit):
        selection.main(['--model', 'resnet18_mod', '--data', str(image_folder), '--out', str(tmp_path / 'b'),
                        '--block', 'layer9.1'])
    assert 'layer3.1' in capsys.readouterr().err
    assert not (tmp_path / 'a').exists() and not (tmp_path / 'b').exists()


def test_breakdown_times_every_mod_block_inside_the_model():
    model = timm.create_model('resnet18_mod_cifar').eval()
    names = [n for n, m in model.named_modules() if isinstance(m, MoDBlock)]
    result = breakdown.block_breakdown(model, torch.randn(1, 3, 32, 32), iters=3, warmup=1)
    rows = result['blocks']
    assert [r['block'] for r in rows] == names
    # every block call lies inside a forward call (paired calls), so the median forward outlasts any block's median
    assert result['model_ms'] > max(r['total_ms'] for r in rows)
    for r in rows:
        # gather + fuse is, call by call, what the MoD block's call takes beyond its selector's and its block's
        assert r['route_ms'] > 0 and r['block_ms'] > 0 and r['gather_fuse_ms'] >= 0
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())  # hooks removed


def test_breakdown_handles_random_routing_and_refuses_plain_models(tmp_path):
    model = mod('resnet18_cifar', c=16, routing='random').eval()
    rows = breakdown.block_breakdown(model, torch.randn(1, 3, 32, 32), iters=2, warmup=1)['blocks']
    assert rows and all(r['route_ms'] == 0 for r in rows)
    with pytest.raises(ValueError, match='no MoD blocks'):
        breakdown.block_breakdown(timm.create_model('resnet18_cifar'), torch.randn(1, 3, 32, 32))
    with pytest.raises(SystemExit):
        breakdown.main(['--models', 'resnet18_cifar'])
    _refuses_to_overwrite(breakdown.main, ['--models', 'resnet18_mod_cifar', '--out'], tmp_path / 'b.md')


def test_breakdown_cli_writes_cost_and_block_table(tmp_path):
    out = tmp_path / 'breakdown.md'
    breakdown.main(['--models', 'resnet18_mod_cifar', '--threads', '1', '--iters', '3', '--out', str(out)])
    text = out.read_text()
    assert 'of which the 4 MoD blocks' in text
    assert text.count('| layer') == 4  # resnet18_mod_cifar: one MoD block per stage


@pytest.mark.slow
@pytest.mark.parametrize('runtime', ['onnxruntime', 'openvino'])
def test_bench_runs_baseline_model_and_bound_in_a_deployment_runtime(runtime, tmp_path):
    pytest.importorskip(runtime, reason='the deploy extra is not installed: pip install -e ".[deploy]"')
    path = tmp_path / 'rows.json'
    bench.main(['--models', 'resnet18_mod_cifar', '--runtime', runtime, '--threads', '1', '--batch-size', '1,3',
                '--min-run-time', '0', '--rounds', '2', '--bound', '--no-train', '--no-gmacs', '--json', str(path)])
    rows = json.loads(path.read_text())
    assert {(r['model'], r['batch_size']) for r in rows} == {
        (m, b) for m in ('resnet18_cifar', 'resnet18_mod_cifar', 'resnet18_mod_cifar[bound]') for b in (1, 3)}
    assert all(r['runtime'] == runtime and r['latency_ms'] > 0 and r.get('train_img_s') is None for r in rows)
    assert all(r['exporter'] == ('dynamo' if runtime == 'onnxruntime' else None) for r in rows)
    title = {'onnxruntime': '### ONNX Runtime (dynamo ONNX export), CPU', 'openvino': '### OpenVINO, CPU'}[runtime]
    assert report.render_markdown(rows).count(title) == 2  # one table per batch size


def test_bench_refuses_runtime_settings_it_cannot_honour():
    for args in (['--runtime', 'onnxruntime', '--channels-last'], ['--runtime', 'openvino', '--device', 'cuda'],
                 ['--runtime', 'onnxruntime', '--compile']):
        with pytest.raises(SystemExit):
            bench.main(['--models', 'resnet18_mod_cifar', *args])


@pytest.mark.parametrize('runtime', slow_cases(['onnxruntime', 'openvino'], ['openvino']))
def test_runtime_breakdown_charges_every_node_to_a_mod_block_part_or_the_rest(runtime):
    pytest.importorskip(runtime, reason='the deploy extra is not installed: pip install -e ".[deploy]"')
    model = timm.create_model('resnet18_mod_cifar').eval()
    result = breakdown.runtime_breakdown(model, torch.randn(1, 3, 32, 32), runtime, threads=1, iters=3)
    rows = result['blocks']
    assert [r['block'] for r in rows] == [n for n, m in model.named_modules() if isinstance(m, MoDBlock)]
    for r in rows:
        # the selector's and the k-channel block's nodes are found inside each MoD block
        assert r['route_ms'] > 0 and r['block_ms'] > 0 and r['gather_fuse_ms'] >= r['reorder_ms'] >= 0
        assert r['total_ms'] == pytest.approx(r['route_ms'] + r['block_ms'] + r['gather_fuse_ms'])
    assert result['model_ms'] > sum(r['total_ms'] for r in rows)  # the standard blocks, stem and head
    assert result['model_ms'] == pytest.approx(sum(ms for _, ms in result['ops']))


def test_payoff_table_lists_each_setting_with_speedup_and_fraction_of_bound(tmp_path):
    row = dict(device='cpu', threads=1, batch_size=1, runtime='openvino', exporter=None, amp=False, cpu='x',
               torch='2', timm='1', params_m=1., latency_ms=1., latency_iqr_ms=0.)
    rows = [dict(row, model='resnet50', speedup=1.0), dict(row, model='resnet50_mod', speedup=1.5),
            dict(row, model='resnet50_mod[bound]', speedup=1.6), dict(row, model='resnet86_mod', speedup=0.96),
            dict(row, batch_size=32, model='resnet50_mod', speedup=1.2)]
    table = report.render_payoff(rows)
    assert '| OpenVINO | CPU, 1 thread | 1 | 1.50 (0.94) |  | **0.96** |' in table
    assert '| OpenVINO | CPU, 1 thread | 32 | 1.20 |' in table
    readme = tmp_path / 'README.md'
    readme.write_text('intro\n<!-- payoff:begin -->\nold\n<!-- payoff:end -->\nrest\n')
    rows_file = tmp_path / 'rows.json'
    rows_file.write_text(json.dumps(rows))
    report.main([str(rows_file), '--out', str(tmp_path / 'B.md'), '--payoff', str(readme)])
    assert readme.read_text() == f'intro\n<!-- payoff:begin -->\n{table}\n<!-- payoff:end -->\nrest\n'


def test_payoff_table_takes_a_setting_measured_twice_from_the_later_run():
    row = dict(device='cpu', threads=1, batch_size=1, runtime='eager', exporter=None, amp=False, cpu='x',
               torch='2', timm='1', params_m=1., latency_ms=1., latency_iqr_ms=0.)
    earlier = [dict(row, source='run1.json', model='resnet50', speedup=1.0),
               dict(row, source='run1.json', model='resnet50_mod', speedup=1.3)]
    later = [dict(r, source='run2.json', speedup=1.4 if r['speedup'] > 1 else 1.0) for r in earlier]
    table = report.render_payoff(earlier + later).splitlines()
    expected = '| PyTorch eager | CPU, 1 thread | 1 | 1.40 |' + '  |' * 4
    assert [line for line in table if 'CPU, 1 thread' in line] == [expected]


def test_int8_table_puts_float32_int8_and_int8_with_float32_selector_side_by_side():
    row = dict(device='cpu', threads=1, batch_size=1, runtime='onnxruntime', exporter='torchscript', amp=False,
               cpu='x', torch='2', timm='1', params_m=1., latency_iqr_ms=0.)
    rows = []
    for precision, keep, latency, speedup, bound in (('fp32', None, 40., 1.5, 1.6), ('int8', 'none', 10., 1.2, 1.5),
                                                      ('int8', 'selector', 12., 1.0, 1.25)):
        rows += [dict(row, precision=precision, keep=keep, model='resnet50_mod', latency_ms=latency, speedup=speedup),
                 dict(row, precision=precision, keep=keep, model='resnet50_mod[bound]', latency_ms=1.,
                      speedup=bound)]
    lines = report.render_int8(rows).splitlines()
    assert lines[0].count('speed-up (of bound)') == 3
    # speed-up (speed-up / bound's) per variant, then float32 latency over INT8's for the model itself
    assert lines[2:] == ['| ONNX Runtime | 1 | 1 | resnet50_mod | 1.50 (0.94) | 1.20 (0.80) | 1.00 (0.80) | 4.00 |']
