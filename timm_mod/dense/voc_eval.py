"""Pascal VOC 2007 detection mAP with 11-point interpolation, the metric of the paper's Table 4 (Appendix C).

No maintained library computes it. torchmetrics' MeanAveragePrecision (reported beside it) follows COCO: given 11
recall thresholds it interpolates as VOC07 does, but it matches boxes by COCO's rules (a detection whose best box is
taken falls back to the next best, crowd regions instead of difficult objects, no inclusive pixels). Where boxes do
not overlap the two agree; this follows the VOC devkit (``VOCevaldet.m``) as MMDetection's VOC evaluation
(``eval_map(..., use_legacy_coordinate=True)``) does:

* per class, detections are taken in descending score order; each is matched to the ground-truth box of its image
  with the highest IoU, with areas and intersections in VOC's inclusive pixel convention (width = x2 - x1 + 1);
* IoU >= 0.5 with a not yet matched box is a true positive, with an already matched one a false positive; a
  detection whose best box is marked difficult counts neither way, and difficult boxes are not in the recall;
* AP is the mean over recall r in {0, 0.1, ..., 1} of the highest precision at recall >= r; mAP averages the
  classes that have ground truth.

Matching needs only one image's boxes, so `update` decides true / false positives and the states are flat tensors
that torchmetrics concatenates across processes.
"""
from typing import Dict, List

import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat
from torchvision.ops import box_iou

__all__ = ['VOC07MeanAP', 'voc07_ap']


def voc07_ap(recall: torch.Tensor, precision: torch.Tensor) -> torch.Tensor:
    """11-point interpolated average precision of one precision / recall curve."""
    points = [precision[recall >= k / 10].max() if (recall >= k / 10).any() else precision.new_zeros(())
              for k in range(11)]
    return torch.stack(points).mean()


def _legacy_iou(det: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    # box_iou on boxes grown by one pixel gives the devkit's inclusive-pixel areas and intersections
    grow = det.new_tensor([0., 0., 1., 1.])
    return box_iou(det + grow, gt + grow)


class VOC07MeanAP(Metric):
    """VOC07 11-point mAP at IoU 0.5; `update` takes torchvision detector outputs and VOC targets."""

    full_state_update = False

    def __init__(self, num_classes: int, iou_threshold: float = 0.5, **kwargs):
        """
        Args:
            num_classes: Object classes, background excluded; labels run from 1 to num_classes.
            iou_threshold: Minimum IoU of a true positive.
            **kwargs: torchmetrics Metric arguments.
        """
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.iou_threshold = iou_threshold
        self.add_state('scores', default=[], dist_reduce_fx='cat')
        self.add_state('labels', default=[], dist_reduce_fx='cat')
        self.add_state('outcome', default=[], dist_reduce_fx='cat')  # 1 true positive, 0 false, -1 ignored
        self.add_state('num_gt', default=torch.zeros(num_classes + 1, dtype=torch.long), dist_reduce_fx='sum')

    def update(self, preds: List[Dict[str, torch.Tensor]], targets: List[Dict[str, torch.Tensor]]) -> None:
        """
        Args:
            preds: Per image: 'boxes' (N, 4) xyxy, 'scores' (N,), 'labels' (N,).
            targets: Per image: 'boxes' (M, 4) xyxy, 'labels' (M,), optional 'difficult' (M,) bool.
        """
        for pred, target in zip(preds, targets):
            difficult = target.get('difficult', torch.zeros_like(target['labels'], dtype=torch.bool))
            self.num_gt += torch.bincount(target['labels'][~difficult], minlength=self.num_classes + 1)
            order = pred['scores'].argsort(descending=True, stable=True)
            boxes, scores, labels = pred['boxes'][order], pred['scores'][order], pred['labels'][order]
            outcome = torch.zeros_like(labels)
            for c in labels.unique().tolist():
                det_idx = (labels == c).nonzero().flatten()
                gt_mask = target['labels'] == c
                if not gt_mask.any():
                    continue
                iou = _legacy_iou(boxes[det_idx], target['boxes'][gt_mask])
                best_iou, best = iou.max(dim=1)
                gt_difficult = difficult[gt_mask]
                matched = torch.zeros(len(gt_difficult), dtype=torch.bool)
                for i, (ov, j) in enumerate(zip(best_iou.tolist(), best.tolist())):
                    if ov < self.iou_threshold:
                        continue
                    if gt_difficult[j]:
                        outcome[det_idx[i]] = -1
                    elif not matched[j]:
                        outcome[det_idx[i]] = 1
                        matched[j] = True
            self.scores.append(scores)
            self.labels.append(labels)
            self.outcome.append(outcome)

    def compute(self) -> Dict[str, torch.Tensor]:
        """'map' over classes with ground truth and 'ap_per_class' (num_classes,), NaN where a class has none."""
        if not self.scores:
            return {'map': torch.tensor(float('nan')), 'ap_per_class': torch.full((self.num_classes,), float('nan'))}
        scores, labels, outcome = (dim_zero_cat(s) for s in (self.scores, self.labels, self.outcome))
        ap = torch.full((self.num_classes,), float('nan'), dtype=torch.float64)
        for c in range(1, self.num_classes + 1):
            npos = int(self.num_gt[c])
            if npos == 0:
                continue
            keep = (labels == c) & (outcome >= 0)
            # float64: a recall of exactly 0.7 (7 / 10) must reach the 0.7 recall point
            hits = outcome[keep][scores[keep].argsort(descending=True, stable=True)].double()
            tp, fp = hits.cumsum(0), (1 - hits).cumsum(0)
            ap[c - 1] = voc07_ap(tp / npos, tp / (tp + fp).clamp(min=1e-12)) if len(hits) else 0.0
        return {'map': ap.nanmean(), 'ap_per_class': ap}
