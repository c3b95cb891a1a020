"""Dense prediction on MoD backbones: the paper's FCN (Cityscapes) and Faster R-CNN + FPN (Pascal VOC) systems.

    segmentation  `fcn`: timm backbone (output stride 8) + torchvision's FCN head
    detection     `faster_rcnn`: timm backbone + FPN + torchvision's Faster R-CNN
    backbone      timm features_only backbones as torchvision expects them
    data          Cityscapes and VOC datasets with the paper's transforms
    voc_eval      the VOC07 11-point mAP of the paper's Table 4
    engine        training and evaluation (``python -m timm_mod.dense seg|det``)
    bench         inference latency of both systems on each backbone (``python -m timm_mod.dense bench``)

Needs the ``dense`` extra: ``pip install -e ".[dense]"``.
"""
from .bench import bench_systems, markdown_table
from .engine import build_system, main
