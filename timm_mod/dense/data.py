"""Cityscapes and Pascal VOC through torchvision's dataset classes, with the paper's pipelines (Appendices B, C).

Both datasets are read from torchvision's on-disk layouts and nothing is downloaded:

* Cityscapes: ``DIR/leftImg8bit/{split}/{city}/*_leftImg8bit.png`` and
  ``DIR/gtFine/{split}/{city}/*_gtFine_labelIds.png``, label ids mapped to the 19 train ids (255 = ignored).
* VOC: ``DIR/VOCdevkit/VOC{year}/{JPEGImages,Annotations,ImageSets/Main}``; training on 2007 + 2012 trainval,
  evaluation on 2007 test, as MMDetection's VOC0712 setup the paper uses.
"""
import os
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np
import torch
from PIL import Image
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch.utils.data import ConcatDataset, Dataset
from torchvision import datasets, tv_tensors
from torchvision.transforms import v2

from .segmentation import IGNORE_INDEX

__all__ = [
    'CITYSCAPES_TRAIN_IDS', 'VOC_CLASSES', 'check_cityscapes', 'check_voc', 'cityscapes', 'voc', 'parse_voc_sets',
    'detection_collate',
]

# labelIds -> train ids (0-18), everything else ignored: the table of torchvision's Cityscapes.classes.
CITYSCAPES_TRAIN_IDS = np.full(256, IGNORE_INDEX, dtype=np.uint8)
for _cls in datasets.Cityscapes.classes:
    if 0 <= _cls.id < 256 and 0 <= _cls.train_id < IGNORE_INDEX:
        CITYSCAPES_TRAIN_IDS[_cls.id] = _cls.train_id

# Label 0 is the detector's background class.
VOC_CLASSES = (
    'aeroplane', 'bicycle', 'bird', 'boat', 'bottle', 'bus', 'car', 'cat', 'chair', 'cow', 'diningtable', 'dog',
    'horse', 'motorbike', 'person', 'pottedplant', 'sheep', 'sofa', 'train', 'tvmonitor')
_VOC_LABEL = {name: i + 1 for i, name in enumerate(VOC_CLASSES)}


def _require_dirs(dataset: str, paths: Sequence[str], layout: str) -> None:
    for path in paths:
        if not os.path.isdir(path):
            raise FileNotFoundError(f'{dataset}: folder not found: {path} (expected {layout})')


def check_cityscapes(root: str, splits: Sequence[str]) -> None:
    """Fail before any work when a split's image or label folder is missing.

    Raises:
        FileNotFoundError: naming the folder looked for.
    """
    layout = 'DIR/leftImg8bit/SPLIT/CITY/*_leftImg8bit.png and DIR/gtFine/SPLIT/CITY/*_gtFine_labelIds.png'
    _require_dirs('Cityscapes', [os.path.join(root, d, s) for s in splits for d in ('leftImg8bit', 'gtFine')], layout)


def parse_voc_sets(spec: str) -> List[Tuple[str, str]]:
    """'2007-trainval,2012-trainval' -> [('2007', 'trainval'), ('2012', 'trainval')]."""
    sets = []
    for item in spec.split(','):
        year, _, image_set = item.strip().partition('-')
        if year not in datasets.voc.DATASET_YEAR_DICT or image_set not in ('train', 'trainval', 'val', 'test'):
            raise ValueError(f'bad VOC set {item!r}: expected YEAR-SET, e.g. 2007-trainval or 2007-test')
        sets.append((year, image_set))
    return sets


def check_voc(root: str, sets: Sequence[Tuple[str, str]]) -> None:
    """Fail before any work when a year's folders or a set's image list is missing.

    Raises:
        FileNotFoundError: naming the folder or file looked for.
    """
    layout = 'DIR/VOCdevkit/VOC{YEAR}/{JPEGImages,Annotations,ImageSets/Main/SET.txt}'
    for year, image_set in sets:
        voc_root = os.path.join(root, 'VOCdevkit', f'VOC{year}')
        _require_dirs('VOC', [os.path.join(voc_root, d) for d in ('JPEGImages', 'Annotations')], layout)
        split_file = os.path.join(voc_root, 'ImageSets', 'Main', f'{image_set}.txt')
        if not os.path.isfile(split_file):
            raise FileNotFoundError(f'VOC: image list not found: {split_file} (expected {layout})')


class CityscapesTransform:
    """Joint image / label pipeline; label ids become train ids first, so resizing never mixes classes.

    Training follows MMSegmentation's Cityscapes pipeline (Appendix B): resize keeping the aspect ratio to the
    image scale times a ratio drawn from [0.5, 2], random crop (padding image with 0 and label with 255 where the
    image is smaller), horizontal flip with p 0.5, photometric distortion, normalisation. Evaluation resizes the
    image to the image scale and keeps the label at full resolution: predictions are upsampled to it.
    """

    def __init__(self, train: bool, img_size: Tuple[int, int], crop_size: Tuple[int, int]):
        """
        Args:
            train: Training (augmenting) or evaluation pipeline.
            img_size: Image scale (height, width); Cityscapes' own 1024 x 2048 in the paper.
            crop_size: Training crop (height, width); 512 x 1024 in the paper.
        """
        normalize = [v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD)]
        if train:
            self.transform = v2.Compose([
                v2.ToImage(),
                v2.ScaleJitter(img_size, scale_range=(0.5, 2.0)),
                v2.RandomCrop(crop_size, pad_if_needed=True, fill={tv_tensors.Image: 0, tv_tensors.Mask: IGNORE_INDEX}),
                v2.RandomHorizontalFlip(0.5),
                # torchvision's port of the SSD distortion MMSegmentation's PhotoMetricDistortion also implements
                v2.RandomPhotometricDistort(),
                *normalize,
            ])
        else:
            self.transform = v2.Compose([v2.ToImage(), v2.Resize(img_size), *normalize])
        self.train = train

    def __call__(self, image: Image.Image, label: Image.Image) -> Tuple[torch.Tensor, torch.Tensor]:
        mask = tv_tensors.Mask(torch.from_numpy(CITYSCAPES_TRAIN_IDS[np.asarray(label)]))
        if self.train:
            image, mask = self.transform(image, mask)
        else:
            image = self.transform(image)
        return image, mask.as_subclass(torch.Tensor).long()


def cityscapes(root: str, split: str, train: bool, img_size: Tuple[int, int], crop_size: Tuple[int, int]) -> Dataset:
    """torchvision's Cityscapes (fine labels, semantic targets) with the paper's pipeline."""
    check_cityscapes(root, [split])
    return datasets.Cityscapes(
        root, split=split, mode='fine', target_type='semantic',
        transforms=CityscapesTransform(train, img_size, crop_size))


class VOCTransform:
    """VOC annotation dict -> torchvision detection target, plus Appendix C's flip in training.

    Boxes keep VOC's pixel coordinates and `difficult` objects are flagged: training drops them (MMDetection keeps
    them only as ignored boxes, which its Faster R-CNN does not use) and evaluation ignores detections they
    explain. Resizing and normalisation happen inside the model (GeneralizedRCNNTransform).
    """

    def __init__(self, train: bool):
        self.train = train
        self.transform = v2.Compose(
            [v2.ToImage(), *([v2.RandomHorizontalFlip(0.5)] if train else []), v2.ToDtype(torch.float32, scale=True)])

    def __call__(self, image: Image.Image, annotation: Dict[str, Any]) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        objects = annotation['annotation'].get('object', [])
        boxes = [[float(o['bndbox'][k]) for k in ('xmin', 'ymin', 'xmax', 'ymax')] for o in objects]
        labels = [_VOC_LABEL[o['name']] for o in objects]
        difficult = torch.tensor([o.get('difficult', '0') == '1' for o in objects], dtype=torch.bool)
        keep = ~difficult if self.train else torch.ones_like(difficult)
        target = {
            'boxes': tv_tensors.BoundingBoxes(
                torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)[keep], format='XYXY',
                canvas_size=(image.height, image.width)),
            'labels': torch.tensor(labels, dtype=torch.int64)[keep],
        }
        if not self.train:
            target['difficult'] = difficult
        image, target = self.transform(image, target)
        target['boxes'] = target['boxes'].as_subclass(torch.Tensor)
        return image, target


def voc(root: str, sets: Sequence[Tuple[str, str]], train: bool) -> Dataset:
    """torchvision's VOCDetection for each (year, image set), concatenated, as detection samples."""
    check_voc(root, sets)
    parts = [datasets.VOCDetection(root, year=year, image_set=image_set, transforms=VOCTransform(train))
             for year, image_set in sets]
    return parts[0] if len(parts) == 1 else ConcatDataset(parts)


def detection_collate(batch: List[Tuple[Any, Any]]) -> Tuple[Tuple[Any, ...], ...]:
    """Images of different sizes stay a list: the detector resizes and batches them itself."""
    return tuple(zip(*batch))
