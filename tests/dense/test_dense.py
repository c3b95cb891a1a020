"""FCN and Faster R-CNN on timm backbones, the VOC07 metric and `python -m timm_mod.dense`, on tiny generated data."""
import argparse
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from tiers import slow_cases

from timm_mod import dense
from timm_mod.dense import engine
from timm_mod.dense.backbone import create_backbone
from timm_mod.dense.data import CityscapesTransform, VOCTransform
from timm_mod.dense.detection import TimmBackboneWithFPN, faster_rcnn
from timm_mod.dense.segmentation import fcn, fcn_loss
from timm_mod.dense.voc_eval import VOC07MeanAP, voc07_ap
from timm_mod.tools.paper import DENSE_PAPER

BACKBONES = ('resnet50', 'resnet50_mod', 'resnet75_mod', 'resnet86_mod')
FAST_BACKBONES = ('resnet50_mod',)  # the fast tier trains one MoD backbone; --full all four
# Fewer proposals and sampled RoIs than the defaults (2000 / 1000 / 512) keep the detector tests short
SMALL_DET = dict(min_size=128, max_size=160, rpn_pre_nms_top_n_train=200, rpn_post_nms_top_n_train=100,
                 rpn_pre_nms_top_n_test=100, rpn_post_nms_top_n_test=50, box_batch_size_per_image=32)


@pytest.fixture(scope='module', autouse=True)
def one_thread():
    # The test machines' cores are shared; two threads fighting other processes run several times slower than one.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _sgd_step_changes_weights(model: torch.nn.Module, loss: torch.Tensor) -> bool:
    params = [p for p in model.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in params]
    optimizer = torch.optim.SGD(params, lr=0.01, momentum=0.9)
    loss.backward()
    optimizer.step()
    return all(torch.isfinite(p).all() for p in params) and any(not torch.equal(a, p) for a, p in zip(before, params))


# --- models --------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('backbone', slow_cases(BACKBONES, FAST_BACKBONES))
def test_fcn_trains_a_step_and_predicts_at_input_size(backbone):
    torch.manual_seed(0)
    model = fcn(backbone)
    x, target = torch.randn(2, 3, 64, 128), torch.randint(0, 19, (2, 64, 128))
    target[:, :4] = 255  # ignored pixels
    out = model.train()(x)
    assert {k: tuple(v.shape) for k, v in out.items()} == {'out': (2, 19, 64, 128), 'aux': (2, 19, 64, 128)}
    assert _sgd_step_changes_weights(model, fcn_loss(out, target))
    with torch.no_grad():
        assert model.eval()(x)['out'].shape == (2, 19, 64, 128)


def test_fcn_backbone_is_dilated_to_output_stride_8():
    model = fcn('resnet86_mod', aux=False)
    assert model.backbone(torch.randn(1, 3, 64, 128))['out'].shape == (1, 2048, 8, 16)
    assert model.aux_classifier is None


def test_fcn_loss_weighs_the_auxiliary_head_0_4():
    target = torch.randint(0, 19, (1, 4, 4))
    main, aux = torch.randn(1, 19, 4, 4), torch.randn(1, 19, 4, 4)
    expected = torch.nn.functional.cross_entropy(main, target) + 0.4 * torch.nn.functional.cross_entropy(aux, target)
    assert fcn_loss({'out': main, 'aux': aux}, target) == pytest.approx(expected.item())


@pytest.mark.parametrize('backbone', slow_cases(BACKBONES, FAST_BACKBONES))
def test_faster_rcnn_trains_a_step_and_detects(backbone):
    torch.manual_seed(0)
    model = faster_rcnn(backbone, **SMALL_DET)
    images = [torch.rand(3, 120, 160), torch.rand(3, 128, 100)]
    targets = [dict(boxes=torch.tensor([[10., 20., 60., 80.], [70., 5., 150., 100.]]), labels=torch.tensor([3, 15])),
               dict(boxes=torch.zeros(0, 4), labels=torch.zeros(0, dtype=torch.int64))]  # an image with no object
    losses = model.train()(images, targets)
    assert set(losses) == {'loss_classifier', 'loss_box_reg', 'loss_objectness', 'loss_rpn_box_reg'}
    assert _sgd_step_changes_weights(model, sum(losses.values()))
    with torch.no_grad():
        detections = model.eval()(images)
    for det, img in zip(detections, images):
        assert det['boxes'].shape[1] == 4 and len(det['boxes']) == len(det['scores']) == len(det['labels']) <= 100
        assert (det['labels'] >= 1).all()
        assert (det['boxes'][:, 2:] <= torch.tensor([img.shape[2], img.shape[1]])).all()  # in the input's pixels


def test_faster_rcnn_resizes_as_appendix_c():
    model = faster_rcnn('resnet50_mod')
    batch, _ = model.transform([torch.rand(3, 375, 500), torch.rand(3, 300, 900)])
    assert batch.image_sizes == [(600, 800), (333, 1000)]  # short side 600 unless the long side would pass 1000


def test_fpn_gets_stages_1_to_4_and_returns_five_levels():
    model = faster_rcnn('resnet50_mod')
    assert model.backbone.body.body.feature_info.reduction() == [4, 8, 16, 32]
    levels = model.backbone(torch.randn(1, 3, 64, 64))
    assert {k: tuple(v.shape) for k, v in levels.items()} == {
        '0': (1, 256, 16, 16), '1': (1, 256, 8, 8), '2': (1, 256, 4, 4), '3': (1, 256, 2, 2), 'pool': (1, 256, 1, 1)}


def test_frozen_backbone_freezes_stem_stage1_and_batch_norm_statistics():
    body = create_backbone('resnet50_mod', (1, 2, 3, 4), ['0', '1', '2', '3'])
    fpn = TimmBackboneWithFPN(body, trainable_layers=3, freeze_bn=True).train()
    frozen = {n for n, p in fpn.named_parameters() if not p.requires_grad}
    assert 'body.body.conv1.weight' in frozen and 'body.body.layer1.1.selector.fc1.weight' in frozen
    assert 'body.body.layer2.0.conv1.weight' not in frozen and 'body.body.layer2.0.bn1.weight' in frozen
    assert not any(n.startswith('fpn') for n in frozen)
    bns = [m for m in fpn.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and not any(m.training for m in bns)


def test_unknown_backbone_names_the_nearest_models():
    with pytest.raises(ValueError, match="unknown backbone 'resnet86mod'; did you mean resnet86_mod"):
        fcn('resnet86mod')
    with pytest.raises(ValueError, match='did you mean resnet75_mod'):
        faster_rcnn('resnet75mod')


# --- parameter counts (Tables 3, 4) -------------------------------------------------------------------------------

def _mmseg_fcn_head_params(in_chs: int = 2048, chs: int = 512, classes: int = 19) -> int:
    """MMSegmentation's FCNHead: 3x3 convs in->c and c->c, a 3x3 conv over [input, output] -> c, a 1x1 classifier."""
    convs = 9 * chs * (in_chs + chs + in_chs + chs)
    return convs + 3 * 2 * chs + chs * classes + classes


def _counts(system: str):
    with torch.device('meta'):
        models = {b: dense.build_system(system, b, **(dict(aux=False) if system == 'fcn' else {})) for b in BACKBONES}
    return {b: _params(m) for b, m in models.items()}, models


@pytest.mark.parametrize('system,decimals', [('fcn', 2), ('faster_rcnn', 3)])
def test_backbone_parameter_deltas_are_the_papers(system, decimals):
    counts, _ = _counts(system)
    for backbone in BACKBONES[1:]:
        ours = (counts[backbone] - counts['resnet50']) / 1e6
        paper = DENSE_PAPER[f'{system}_{backbone}'].params_m - DENSE_PAPER[f'{system}_resnet50'].params_m
        # the paper's deltas are differences of totals rounded to `decimals`: one unit of the last place apart
        assert abs(ours - paper) <= 10 ** -decimals + 1e-9, (backbone, ours, paper)


def test_fcn_totals_are_the_papers_with_mmsegmentations_head():
    counts, models = _counts('fcn')
    head_gap = _mmseg_fcn_head_params() - _params(models['resnet50'].classifier)
    for backbone in BACKBONES:
        assert round((counts[backbone] + head_gap) / 1e6, 2) == DENSE_PAPER[f'fcn_{backbone}'].params_m


def test_faster_rcnn_totals_are_the_papers_with_mmdetections_box_regressor():
    counts, _ = _counts('faster_rcnn')
    # torchvision regresses boxes for all 21 classes, background included; MMDetection for the 20 object classes
    regressor_gap = 4 * (1024 + 1)
    for backbone in BACKBONES:
        assert round((counts[backbone] - regressor_gap) / 1e6, 3) == DENSE_PAPER[f'faster_rcnn_{backbone}'].params_m


# --- VOC07 11-point mAP ----------------------------------------------------------------------------------------------

def test_voc07_ap_is_the_mean_of_11_interpolated_precisions():
    recall, precision = torch.tensor([0.5, 1.0]), torch.tensor([1.0, 0.5])
    assert voc07_ap(recall, precision).item() == pytest.approx((6 * 1.0 + 5 * 0.5) / 11)


def test_voc07_map_matches_a_hand_computed_case_and_ignores_difficult_objects():
    metric = VOC07MeanAP(num_classes=2)
    gt = dict(boxes=torch.tensor([[0., 0., 9., 9.], [20., 20., 29., 29.], [40., 40., 49., 49.]]),
              labels=torch.tensor([1, 1, 1]), difficult=torch.tensor([False, False, True]))
    pred = dict(boxes=torch.tensor([[0., 0., 9., 9.], [0., 0., 9., 9.], [40., 40., 49., 49.], [60., 60., 69., 69.]]),
                scores=torch.tensor([0.9, 0.8, 0.7, 0.6]), labels=torch.tensor([1, 1, 1, 1]))
    result = metric(preds=[pred], targets=[gt])
    # ranked: TP, FP (duplicate), ignored (difficult), FP -> recall 0.5 at precision 1, then precision falls
    assert result['map'].item() == pytest.approx(6 / 11)
    assert torch.isnan(result['ap_per_class'][1])  # class 2 has no ground truth and does not count


def test_voc07_map_agrees_with_torchmetrics_at_11_recall_points():
    pytest.importorskip('pycocotools')
    from torchmetrics.detection import MeanAveragePrecision
    gen = torch.Generator().manual_seed(0)
    preds, targets = [], []
    for _ in range(20):
        n = int(torch.randint(1, 5, (1,), generator=gen))
        # boxes in separate 150 px columns: where boxes overlap, the VOC devkit and COCO match differently
        xy = torch.rand(n, 2, generator=gen) * 10 + torch.arange(n)[:, None] * torch.tensor([150., 0.])
        gt = torch.cat([xy, xy + 40 + torch.rand(n, 2, generator=gen) * 100], 1)
        labels = torch.randint(1, 6, (n,), generator=gen)
        hit = torch.rand(n, generator=gen) < 0.7
        # detections either clearly hit (IoU near 1) or clearly miss, so the two pixel conventions agree
        boxes = torch.cat([gt[hit] + torch.randn(int(hit.sum()), 4, generator=gen), torch.tensor([[0., 300, 50, 350]])])
        preds.append(dict(boxes=boxes, scores=torch.rand(len(boxes), generator=gen),
                          labels=torch.cat([labels[hit], torch.randint(1, 6, (1,), generator=gen)])))
        targets.append(dict(boxes=gt, labels=labels))
    ours = VOC07MeanAP(num_classes=20)(preds, targets)['map']
    coco = MeanAveragePrecision(iou_thresholds=[0.5], rec_thresholds=[k / 10 for k in range(11)])
    assert ours.item() == pytest.approx(coco(preds, targets)['map'].item(), abs=1e-6)


# --- data pipelines --------------------------------------------------------------------------------------------------

def test_cityscapes_label_ids_become_train_ids_and_crops_pad_with_ignore():
    image = Image.fromarray(np.full((16, 32, 3), 128, np.uint8))
    # road, car, unlabeled, bicycle
    label = Image.fromarray(np.array([[7, 26, 0, 33]] * 16, np.uint8).repeat(8, axis=1))
    _, evaluated = CityscapesTransform(False, (8, 16), (32, 64))(image, label)
    assert evaluated.shape == (16, 32)  # labels stay at full resolution for evaluation
    assert evaluated[0, ::8].tolist() == [0, 13, 255, 18]
    torch.manual_seed(0)
    crop, target = CityscapesTransform(True, (16, 32), (32, 64))(image, label)
    # scaled by at most 2 from 16 x 32, so the 32 x 64 crop always needs padding: label 255 there
    assert crop.shape == (3, 32, 64) and target.shape == (32, 64) and (target == 255).any()
    assert set(target.unique().tolist()) <= {0, 13, 18, 255}


def test_voc_training_drops_difficult_objects_and_evaluation_flags_them():
    image = Image.new('RGB', (32, 16))
    objects = [dict(name='dog', difficult='0', bndbox=dict(xmin='1', ymin='2', xmax='10', ymax='12')),
               dict(name='person', difficult='1', bndbox=dict(xmin='3', ymin='4', xmax='20', ymax='14'))]
    _, evaluated = VOCTransform(False)(image, {'annotation': {'object': objects}})
    assert evaluated['labels'].tolist() == [12, 15] and evaluated['difficult'].tolist() == [False, True]
    assert evaluated['boxes'].tolist() == [[1, 2, 10, 12], [3, 4, 20, 14]]
    _, trained = VOCTransform(True)(image, {'annotation': {'object': objects}})
    assert trained['labels'].tolist() == [12] and 'difficult' not in trained


# --- python -m timm_mod.dense ----------------------------------------------------------------------------------------

def _png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


@pytest.fixture(scope='module')
def cityscapes_dir(tmp_path_factory):
    """2 train and 1 val image, 32 x 64, in torchvision's Cityscapes layout, label ids from the full 0-33 range."""
    root = tmp_path_factory.mktemp('cityscapes')
    rng = np.random.default_rng(0)
    for split, n in (('train', 2), ('val', 1)):
        for i in range(n):
            stem = f'aachen_{i:06d}_000019'
            _png(root / 'leftImg8bit' / split / 'aachen' / f'{stem}_leftImg8bit.png',
                 rng.integers(0, 256, (32, 64, 3), dtype=np.uint8))
            _png(root / 'gtFine' / split / 'aachen' / f'{stem}_gtFine_labelIds.png',
                 rng.integers(0, 34, (32, 64), dtype=np.uint8))
    return root


@pytest.fixture(scope='module')
def voc_dir(tmp_path_factory):
    """VOC2007 trainval (2) and test (1), VOC2012 trainval (1), 48 x 64, each with a dog and a difficult person."""
    root = tmp_path_factory.mktemp('voc')
    rng = np.random.default_rng(0)
    objects = ''.join(
        f'<object><name>{name}</name><difficult>{difficult}</difficult><bndbox><xmin>{x}</xmin><ymin>{y}</ymin>'
        f'<xmax>{x + 20}</xmax><ymax>{y + 16}</ymax></bndbox></object>'
        for name, difficult, x, y in (('dog', 0, 5, 4), ('person', 1, 30, 20)))
    for year, image_set, n in (('2007', 'trainval', 2), ('2012', 'trainval', 1), ('2007', 'test', 1)):
        base = root / 'VOCdevkit' / f'VOC{year}'
        ids = [f'{year}_{image_set}_{i}' for i in range(n)]
        for name in ids:
            _png(base / 'JPEGImages' / f'{name}.jpg', rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
            (base / 'Annotations').mkdir(exist_ok=True)
            (base / 'Annotations' / f'{name}.xml').write_text(
                f'<annotation><filename>{name}.jpg</filename><size><width>64</width><height>48</height>'
                f'<depth>3</depth></size>{objects}</annotation>')
        (base / 'ImageSets' / 'Main').mkdir(parents=True, exist_ok=True)
        (base / 'ImageSets' / 'Main' / f'{image_set}.txt').write_text('\n'.join(ids) + '\n')
    return root


def _common(tmp_path):
    return ['--backbone', 'resnet50_mod', '--workers', '0', '--device', 'cpu', '--output', str(tmp_path / 'runs')]


SEG_SMALL = ['--img-size', '32', '64', '--crop-size', '32', '64']


@pytest.fixture(scope='module')
def seg_run(cityscapes_dir, tmp_path_factory):
    """A seg run of 2 iterations, finished: its folder and metrics."""
    out = tmp_path_factory.mktemp('seg')
    return dense.main(['seg', '--data', str(cityscapes_dir), '--iters', '2', *SEG_SMALL, *_common(out)])


@pytest.fixture(scope='module')
def det_run(voc_dir, tmp_path_factory):
    """A det run of 2 iterations (2 epochs of 1 batch of 2 of the 3 training images), finished."""
    out = tmp_path_factory.mktemp('det')
    return dense.main(['det', '--data', str(voc_dir), '--iters', '2', '--img-size', '64', '96', *_common(out)])


@pytest.fixture
def no_work(monkeypatch):
    """Fails the test if the command gets as far as loading a dataset or building a model."""
    def work(*args, **kwargs):
        raise AssertionError('bad input was not refused before the work started')
    for name in ('cityscapes', 'voc', 'build_system'):
        monkeypatch.setattr(engine, name, work)


def test_seg_entry_point_trains_evaluates_checkpoints_and_resumes(seg_run, cityscapes_dir, tmp_path):
    first = seg_run
    assert set(first['metrics']) == {'mIoU', 'aAcc', 'mAcc'}
    logged = [json.loads(line) for line in (first['run_dir'] / 'metrics.jsonl').read_text().splitlines()]
    assert logged == [dict(iteration=2, **first['metrics'])]
    ckpt = torch.load(first['run_dir'] / 'last.pth', weights_only=True)
    assert ckpt['iteration'] == 2 and ckpt['args']['lr'] == 0.01 and ckpt['args']['weight_decay'] == 5e-4
    assert ckpt['epoch_iters'] == 1  # 2 training images, batches of 2

    resumed = dense.main(['seg', '--data', str(cityscapes_dir), '--iters', '3', '--resume',
                          str(first['run_dir'] / 'last.pth'), *SEG_SMALL, *_common(tmp_path)])
    assert resumed['run_dir'] != first['run_dir'] and (first['run_dir'] / 'last.pth').exists()
    assert torch.load(resumed['run_dir'] / 'last.pth', weights_only=True)['iteration'] == 3

    again = dense.main(['seg', '--data', str(cityscapes_dir), '--eval-only', '--resume',
                        str(first['run_dir'] / 'last.pth'), *SEG_SMALL, *_common(tmp_path)])
    assert again['metrics'] == pytest.approx(first['metrics'])


@pytest.mark.slow
def test_seg_entry_point_trains_distributed_under_torchrun(cityscapes_dir, tmp_path):
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2', '-m',
           'timm_mod.dense', 'seg', '--data', str(cityscapes_dir), '--iters', '2', '--batch-size', '1', *SEG_SMALL,
           *_common(tmp_path)]
    done = subprocess.run(cmd, env=dict(os.environ, OMP_NUM_THREADS='1'), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert '2 process(es) on cpu' in done.stdout
    (run_dir,) = (tmp_path / 'runs').iterdir()  # one folder: only rank 0 writes
    assert torch.load(run_dir / 'last.pth', weights_only=True)['iteration'] == 2


def test_det_entry_point_trains_on_07_12_and_evaluates_on_07_test(det_run):
    result = det_run
    assert set(result['metrics']) == {'mAP50_voc07', 'mAP50_coco'}
    args = json.loads((result['run_dir'] / 'args.json').read_text())
    assert args['train_sets'] == '2007-trainval,2012-trainval' and args['eval_sets'] == '2007-test'
    assert args['lr'] == pytest.approx(0.01 * 2 / 16) and args['weight_decay'] == 1e-4


def test_entry_point_rejects_an_unknown_backbone_before_any_work(cityscapes_dir, tmp_path, capsys):
    with pytest.raises(SystemExit):
        dense.main(['seg', '--data', str(cityscapes_dir), *_common(tmp_path)[2:], '--backbone', 'resnet86mod'])
    assert "unknown backbone 'resnet86mod'; did you mean resnet86_mod" in capsys.readouterr().err
    assert not (tmp_path / 'runs').exists()


@pytest.mark.parametrize('task,missing', [('seg', 'gtFine/val'), ('det', 'VOCdevkit/VOC2012/JPEGImages')])
def test_entry_point_names_the_missing_dataset_folder(task, missing, tmp_path, capsys):
    (tmp_path / 'data' / 'leftImg8bit' / 'train').mkdir(parents=True)
    (tmp_path / 'data' / 'gtFine' / 'train').mkdir(parents=True)
    (tmp_path / 'data' / 'leftImg8bit' / 'val').mkdir(parents=True)
    for d in ('JPEGImages', 'Annotations', 'ImageSets/Main'):
        (tmp_path / 'data' / 'VOCdevkit' / 'VOC2007' / d).mkdir(parents=True)
    (tmp_path / 'data' / 'VOCdevkit' / 'VOC2007' / 'ImageSets' / 'Main' / 'trainval.txt').write_text('')
    with pytest.raises(SystemExit):
        dense.main([task, '--data', str(tmp_path / 'data'), *_common(tmp_path)])
    assert f'folder not found: {tmp_path / "data" / missing}' in capsys.readouterr().err


@pytest.mark.parametrize('iters,progress', [('2', 'finished at iteration 2 of 2'),
                                            ('1', 'is at iteration 2, past --iters 1')], ids=['at the end', 'past it'])
def test_resuming_a_finished_run_is_refused_saying_what_to_do(iters, progress, seg_run, cityscapes_dir, tmp_path,
                                                              refused, no_work):
    ckpt = seg_run['run_dir'] / 'last.pth'
    error = refused(['seg', '--data', str(cityscapes_dir), '--iters', iters, '--resume', str(ckpt), *SEG_SMALL,
                     *_common(tmp_path)])
    assert error.endswith(f'error: --resume {ckpt}: the run {progress}: evaluate it with --eval-only, or raise --iters '
                          f'above 2 to train further')
    assert not (tmp_path / 'runs').exists()


def test_resuming_a_run_that_finished_its_epochs_is_refused(det_run, voc_dir, tmp_path, refused, no_work):
    ckpt = det_run['run_dir'] / 'last.pth'
    error = refused(['det', '--data', str(voc_dir), '--epochs', '2', '--resume', str(ckpt), *_common(tmp_path)])
    assert error.endswith(f'error: --resume {ckpt}: the run finished at epoch 2 of 2: evaluate it with --eval-only, '
                          f'or raise --epochs above 2 to train further')
    assert not (tmp_path / 'runs').exists()


@pytest.fixture(scope='module')
def seg_checkpoint(seg_run):
    """The seg run's checkpoint with its model cut to its first two tensors and no optimizer state, quick to save."""
    ckpt = torch.load(seg_run['run_dir'] / 'last.pth', weights_only=True)
    model = dict(list(ckpt['model'].items())[:2])
    return dict(ckpt, model=model, optimizer=dict(ckpt['optimizer'], state={}))


def _truncated(path, ckpt):
    torch.save(ckpt, path)
    path.write_bytes(path.read_bytes()[:path.stat().st_size // 2])


def _with_args(**changes):
    return lambda path, ckpt: torch.save(dict(ckpt, args={**ckpt['args'], **changes}), path)


def _without_task(path, ckpt):
    torch.save(dict(ckpt, args={k: v for k, v in ckpt['args'].items() if k != 'task'}), path)


def _with_nan(path, ckpt):
    name = next(iter(ckpt['model']))
    torch.save(dict(ckpt, model=dict(ckpt['model'], **{name: torch.full_like(ckpt['model'][name], float('nan'))})),
               path)


BAD_RESUMES = {
    'missing': (lambda path, ckpt: None, 'argument --resume: no file {path}'),
    'a folder': (lambda path, ckpt: path.mkdir(), 'argument --resume: no file {path}'),
    'truncated': (_truncated, '--resume {path}: not a readable checkpoint: torch.load(weights_only=True) failed'),
    'empty': (lambda path, ckpt: path.write_bytes(b''), '--resume {path}: not a readable checkpoint'),
    'text': (lambda path, ckpt: path.write_text('model: resnet50_mod'), '--resume {path}: not a readable checkpoint'),
    'pickled objects': (lambda path, ckpt: torch.save(dict(ckpt, args=argparse.Namespace(**ckpt['args'])), path),
                        '--resume {path}: not a readable checkpoint'),
    'a list': (lambda path, ckpt: torch.save([ckpt], path), '--resume {path}: holds a list, not a timm_mod.dense'),
    'a bare state dict': (lambda path, ckpt: torch.save(ckpt['model'], path), (
        '--resume {path}: not a timm_mod.dense checkpoint (no valid model, optimizer, scheduler, iteration, '
        'epoch_iters, args)')),
    'args without the task': (
        _without_task, "--resume {path}: not a timm_mod.dense checkpoint (no valid args['task'])"),
    'another task': (
        _with_args(task='det'), '--resume {path}: saved by a det run on resnet50_mod, not seg on resnet50_mod'),
    'another backbone': (
        _with_args(backbone='resnet50'), '--resume {path}: saved by a seg run on resnet50, not seg on resnet50_mod'),
    'a NaN weight': (_with_nan, '--resume {path}: model.backbone.body.conv1.weight holds NaN or infinite values'),
}


@pytest.mark.parametrize('case', BAD_RESUMES)
@pytest.mark.parametrize('eval_only', [False, True], ids=['resume', 'eval-only'])
def test_a_bad_resume_file_is_refused_in_one_line_naming_it_and_the_problem(case, eval_only, seg_checkpoint,
                                                                            cityscapes_dir, tmp_path, refused, no_work):
    write, expected = BAD_RESUMES[case]
    path = tmp_path / 'last.pth'
    write(path, seg_checkpoint)
    error = refused(['seg', '--data', str(cityscapes_dir), '--resume', str(path), *(['--eval-only'] * eval_only),
                     *SEG_SMALL, *_common(tmp_path)])
    assert f'error: {expected.format(path=path)}' in error  # on the one line
    assert not (tmp_path / 'runs').exists()


BAD_ARGS = [
    ('seg', ['--batch-size', '0'], 'argument --batch-size: 0: must be a whole number of at least 1'),
    ('seg', ['--iters', '2.5'], "argument --iters: invalid positive_int value: '2.5'"),
    ('seg', ['--lr', '-0.01'], 'argument --lr: -0.01: must be a number above 0'),
    ('seg', ['--img-size', '32', '0'], 'argument --img-size: 0: must be a whole number of at least 1'),
    ('seg', ['--log-interval', '0'], 'argument --log-interval: 0: must be a whole number of at least 1'),
    ('seg', ['--workers', '-1'], 'argument --workers: -1: must be a whole number of at least 0'),
    ('det', ['--momentum', 'nan'], 'argument --momentum: nan: must be a number of at least 0'),
    ('det', ['--epochs', '0'], 'argument --epochs: 0: must be a whole number of at least 1'),
    ('det', ['--warmup-ratio', 'inf'], 'argument --warmup-ratio: inf: must be a number of at least 0'),
    ('seg', ['--data', '{tmp}/missing'], 'argument --data: no folder {tmp}/missing'),
    ('det', ['--data', '{tmp}/file'], 'argument --data: no folder {tmp}/file'),
    ('seg', ['--output', '{tmp}/file/runs'], '--output {tmp}/file/runs: {tmp}/file is a file, not a folder'),
]


@pytest.mark.parametrize('task,argv,expected', BAD_ARGS, ids=[f'{task} {argv[0]}' for task, argv, _ in BAD_ARGS])
def test_a_bad_number_or_path_is_refused_naming_the_flag(task, argv, expected, cityscapes_dir, voc_dir, tmp_path,
                                                         refused, no_work):
    (tmp_path / 'file').write_text('')
    data = cityscapes_dir if task == 'seg' else voc_dir
    argv = [a.format(tmp=tmp_path) for a in argv]
    error = refused([task, '--data', str(data), *_common(tmp_path), *argv])
    assert error.endswith(f'error: {expected.format(tmp=tmp_path)}')


@pytest.mark.skipif(torch.cuda.is_available(), reason='needs a machine without CUDA')
def test_cuda_without_a_cuda_device_is_refused(cityscapes_dir, tmp_path, refused, no_work):
    error = refused(['seg', '--data', str(cityscapes_dir), *_common(tmp_path), '--device', 'cuda'])
    assert '--device cuda: no CUDA device here' in error and 'use --device cpu' in error


@pytest.mark.parametrize('task,module,expected', [
    ('seg', 'torchmetrics', 'evaluation needs torchmetrics: pip install "timm-mod[dense]"'),
    ('det', 'pycocotools', 'the COCO-style mAP needs pycocotools: pip install "timm-mod[dense]"'),
    ('det', 'faster_coco_eval', (
        'needs faster-coco-eval, which the dense extra does not install: pip install faster-coco-eval')),
], ids=['torchmetrics', 'pycocotools', 'faster_coco_eval'])
def test_a_missing_evaluation_package_is_refused_naming_its_install(task, module, expected, cityscapes_dir, voc_dir,
                                                                    tmp_path, refused, monkeypatch, no_work):
    monkeypatch.setitem(sys.modules, module, None)  # as Python blocks an import
    data = cityscapes_dir if task == 'seg' else voc_dir
    backend = ['--coco-backend', module] if module == 'faster_coco_eval' else []
    error = refused([task, '--data', str(data), *_common(tmp_path), *backend])
    assert error.endswith(expected)
