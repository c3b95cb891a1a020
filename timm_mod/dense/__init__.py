"""Dense prediction on MoD backbones: the paper's FCN (Cityscapes) and Faster R-CNN + FPN (Pascal VOC) systems.

    segmentation  `fcn`: timm backbone (output stride 8) + torchvision's FCN head
    detection     `faster_rcnn`: timm backbone + FPN + torchvision's Faster R-CNN
    backbone      timm features_only backbones as torchvision expects them
    data          Cityscapes and VOC datasets with the paper's transforms
    voc_eval      the VOC07 11-point mAP of the paper's Table 4
    engine        training, evaluation and timing (``python -m timm_mod.dense seg|det|bench``)

Needs the ``dense`` extra: ``pip install -e ".[dense]"``.
"""
from .engine import bench_systems, build_system, main, markdown_table
