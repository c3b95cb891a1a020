"""benchmarks/matrix.py: groups of bench settings in one process, unit by unit, within a budget."""
import json

import pytest
import torch

import matrix  # benchmarks/matrix.py (conftest.py puts benchmarks/ on sys.path)
from matrix import Group, parse_group, run_matrix, units


def test_a_group_reads_runtime_batch_sizes_training_and_bounds():
    assert parse_group('eager bs=32,256 train bound') == Group('eager bs=32,256 train bound', False, None, (32, 256),
                                                               True, True)
    assert parse_group('compile:reduce-overhead bs=1') == Group('compile:reduce-overhead bs=1', True,
                                                                'reduce-overhead', (1,), False, False)
    assert parse_group('bs=64 compile').compile_mode is None


@pytest.mark.parametrize('text', ['eager', 'bs=1', 'eager bs=1 fast', 'eager bs='])
def test_a_group_without_runtime_or_batch_or_with_an_unknown_word_is_refused(text):
    with pytest.raises(ValueError, match='group'):
        parse_group(text)


def test_units_run_batch_sizes_in_order_each_with_every_baseline_and_its_models():
    group = parse_group('eager bs=256,32')
    assert units(group, ['resnet50_mod', 'mobilenetv2_mod', 'resnet86_mod']) == [
        (256, 'resnet50', ['resnet50_mod', 'resnet86_mod']), (256, 'mobilenetv2_100', ['mobilenetv2_mod']),
        (32, 'resnet50', ['resnet50_mod', 'resnet86_mod']), (32, 'mobilenetv2_100', ['mobilenetv2_mod'])]
    with pytest.raises(ValueError, match='no paired baseline'):
        units(group, ['resnet50'])


@pytest.fixture
def fake_bench(monkeypatch):
    """run_bench replaced by one that records its calls and returns a row per model."""
    calls = []

    def run_bench(names, batch_sizes, compile_model, compile_mode, bound, train, **kwargs):
        calls.append(dict(names=names, bs=batch_sizes, compile=compile_model, mode=compile_mode, bound=bound,
                          train=train, **kwargs))
        return [dict(model=n, batch_size=batch_sizes[0]) for n in names], []

    monkeypatch.setattr(matrix, 'run_bench', run_bench)
    config = torch._dynamo.config  # a config module: monkeypatch would delete what it cannot see in its __dict__
    saved = config.automatic_dynamic_shapes, config.recompile_limit
    config.automatic_dynamic_shapes, config.recompile_limit = True, 8
    yield calls
    config.automatic_dynamic_shapes, config.recompile_limit = saved


def test_every_unit_runs_in_order_and_its_rows_are_written_as_they_come(fake_bench, tmp_path):
    path = tmp_path / 'rows.json'
    groups = [parse_group('eager bs=4 train bound'), parse_group('compile:reduce-overhead bs=1')]
    rows, records = run_matrix(groups, ['mobilenetv2_mod', 'resnet50_mod'], json_path=str(path), amp=True)
    assert [(c['names'], c['bs'], c['compile'], c['mode'], c['train'], c['bound']) for c in fake_bench] == [
        (['mobilenetv2_mod'], [4], False, None, True, True), (['resnet50_mod'], [4], False, None, True, True),
        (['mobilenetv2_mod'], [1], True, 'reduce-overhead', False, False),
        (['resnet50_mod'], [1], True, 'reduce-overhead', False, False)]
    assert all(c['amp'] is True and c['gmacs'] is False for c in fake_bench)
    assert json.loads(path.read_text()) == rows
    assert [r['group'] for r in rows] == ['eager bs=4 train bound'] * 2 + ['compile:reduce-overhead bs=1'] * 2
    assert not any(r['skipped'] for r in records)


def test_compiled_units_get_static_graphs_and_room_for_every_model(fake_bench):
    run_matrix([parse_group('compile bs=1')], ['resnet50_mod'])
    assert torch._dynamo.config.automatic_dynamic_shapes is False
    assert torch._dynamo.config.recompile_limit >= 64


class FakeClock:
    """A clock whose time passes only in its `run_bench`: `per_model[baseline]` seconds per model of a unit."""

    def __init__(self, per_model):
        self.now, self.per_model = 0.0, per_model

    def __call__(self):
        return self.now

    def run_bench(self, names, batch_sizes, **kwargs):
        self.now += self.per_model[matrix.BASELINES[names[0]]] * (1 + len(names))
        return [dict(model=n, batch_size=batch_sizes[0]) for n in names], []


def test_units_that_would_overrun_the_budget_are_skipped_and_recorded(fake_bench, tmp_path):
    path = tmp_path / 'rows.json'
    # first estimates: a unit of resnet50 + 2 models + 2 bounds eager, 5 x 4 s = 20 s, fits in 30 s; a compiled one,
    # 3 x 25 s = 75 s, does not
    groups = [parse_group('compile bs=1'), parse_group('eager bs=2 bound')]
    rows, records = run_matrix(groups, ['resnet50_mod', 'resnet75_mod'], budget_s=30, json_path=str(path),
                               clock=lambda: 0.0)
    assert [(r['group'], r['skipped'], r['estimate_s']) for r in records] == [
        ('compile bs=1', True, 75), ('eager bs=2 bound', False, 20)]
    assert [c['compile'] for c in fake_bench] == [False]
    _, records = run_matrix(groups, ['resnet50_mod'], budget_s=1, json_path=str(tmp_path / 'none.json'),
                            clock=lambda: 0.0)
    assert all(r['skipped'] for r in records)
    assert json.loads((tmp_path / 'none.json').read_text()) == []  # a file saying nothing was measured


def test_the_budget_counts_what_earlier_units_took(monkeypatch, fake_bench):
    clock = FakeClock({'resnet50': 10.0})  # 20 s a unit: resnet50 and resnet50_mod
    monkeypatch.setattr(matrix, 'run_bench', clock.run_bench)
    _, records = run_matrix([parse_group('eager bs=1,2,3')], ['resnet50_mod'], budget_s=50, clock=clock)
    # unit 1: estimated 2 x 4 s, 50 s left; unit 2: 2 x 10 s as unit 1 took, 30 s left; unit 3: 20 s, 10 s left
    assert [(r['estimate_s'], r['skipped']) for r in records] == [(8, False), (20, False), (20, True)]


def test_estimates_follow_what_units_of_the_same_baseline_and_kind_took(monkeypatch, fake_bench):
    clock = FakeClock({'resnet50': 10.0, 'mobilenetv2_100': 2.0})  # seconds per model, compiled
    monkeypatch.setattr(matrix, 'run_bench', clock.run_bench)
    groups = [parse_group('compile bs=256'), parse_group('compile bs=1')]
    _, records = run_matrix(groups, ['resnet50_mod', 'mobilenetv2_mod'], budget_s=1000, clock=clock)
    # first compiled unit: 25 s per model; then the most any compiled unit took; then each baseline's own last
    assert [r['estimate_s'] for r in records] == [50, 20, 20, 4]
    assert [r['seconds'] for r in records] == [20, 4, 20, 4]


def test_cli_refuses_existing_results_and_unknown_words_before_any_work(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(matrix, 'run_matrix', lambda *args, **kwargs: pytest.fail('ran before refusing'))
    path = tmp_path / 'rows.json'
    path.write_text('[]')
    with pytest.raises(SystemExit) as info:
        matrix.main(['--models', 'resnet50_mod', '--group', 'eager bs=1', '--json', str(path)])
    assert info.value.code == 2 and 'exists' in capsys.readouterr().err
    assert path.read_text() == '[]'
    with pytest.raises(SystemExit) as info:
        matrix.main(['--models', 'resnet50_mod', '--group', 'eager bs=1 quickly'])
    assert info.value.code == 2 and "unknown word 'quickly'" in capsys.readouterr().err


@pytest.mark.parametrize('args, message', [
    (['--models', 'resnet50_modd'], "unknown model 'resnet50_modd'"),
    (['--models', 'resnet50'], 'no paired baseline'),
    (['--budget', '0'], 'argument --budget'),
    (['--rounds', '0'], 'argument --rounds'),
    (['--threads', '0'], 'argument --threads'),
])
def test_cli_refuses_bad_arguments(monkeypatch, capsys, args, message):
    monkeypatch.setattr(matrix, 'run_matrix', lambda *a, **k: pytest.fail('ran with a bad argument'))
    with pytest.raises(SystemExit) as info:
        matrix.main(['--models', 'resnet50_mod', '--group', 'eager bs=1', *args])
    assert info.value.code == 2 and message in capsys.readouterr().err


def _failing_bench(after: int):
    """run_bench that returns a row per model for `after` units, then fails."""
    calls = []

    def run_bench(names, batch_sizes, **kwargs):
        calls.append(names)
        if len(calls) > after:
            raise RuntimeError('out of memory')
        return [dict(model=n, batch_size=batch_sizes[0]) for n in names], []

    return run_bench


def test_a_run_that_fails_later_keeps_the_rows_it_measured(monkeypatch, fake_bench, tmp_path):
    monkeypatch.setattr(matrix, 'run_bench', _failing_bench(after=1))
    path = tmp_path / 'rows.json'
    with pytest.raises(RuntimeError, match='out of memory'):
        matrix.main(['--models', 'resnet50_mod', '--group', 'eager bs=1,2', '--json', str(path)])
    assert [(r['model'], r['batch_size']) for r in json.loads(path.read_text())] == [('resnet50_mod', 1)]


def test_a_run_that_fails_before_measuring_removes_its_json(monkeypatch, fake_bench, tmp_path):
    monkeypatch.setattr(matrix, 'run_bench', _failing_bench(after=0))
    path = tmp_path / 'rows.json'
    with pytest.raises(RuntimeError, match='out of memory'):
        matrix.main(['--models', 'resnet50_mod', '--group', 'eager bs=1,2', '--json', str(path)])
    assert not path.exists()
    assert not list(tmp_path.iterdir())  # nothing written aside either


def test_a_real_unit_on_the_cpu_writes_bench_rows(tmp_path):
    path = tmp_path / 'rows.json'
    matrix.main(['--models', 'mobilenetv2_mod', '--group', 'eager bs=2 bound', '--img-size', '32', '--threads', '1',
                 '--rounds', '1', '--min-run-time', '0', '--channels-last', '--json', str(path)])
    rows = json.loads(path.read_text())
    assert [r['model'] for r in rows] == ['mobilenetv2_100', 'mobilenetv2_mod', 'mobilenetv2_mod[bound]']
    assert all(r['batch_size'] == 2 and r['channels_last'] and r['latency_ms'] > 0 for r in rows)
