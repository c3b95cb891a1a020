"""Numbers reported in the paper (Cakaj, Mehnert, Yang, ACCV 2024, arXiv:2409.17016), transcribed once.

These are the paper's figures, never our measurements: tests check our models' parameter and MAC counts against
them, and the benchmark prints them beside what it measures, labelled as the paper's. The paper timed CPU latency on
an Intel Core i7-10850H and GPU latency on an NVIDIA Quadro RTX 3000 with torch.utils.benchmark.
"""
from typing import Dict, NamedTuple, Optional

__all__ = ['PaperRow', 'PAPER', 'DensePaperRow', 'DENSE_PAPER']


class PaperRow(NamedTuple):
    table: str
    gmacs: float
    params_m: float  # 1000 classes for ImageNet models, 10 for CIFAR-10 models
    top1: Optional[float] = None
    cpu_ms: Optional[float] = None
    gpu_ms: Optional[float] = None
    speedup_cpu: Optional[float] = None
    speedup_gpu: Optional[float] = None
    params_m_c100: Optional[float] = None


PAPER: Dict[str, PaperRow] = {
    # Table 1 / 7 / 8 (ImageNet, 224 px)
    'resnet152_mod': PaperRow('1', 6.34, 37.46, 77.81, 208.80, 3.82, 1.20, 1.12),
    'resnet101': PaperRow('1', 7.80, 44.55, 77.81, 251.05, 4.28, 1.00, 1.00),
    'resnet101_mod': PaperRow('1', 4.58, 29.21, 77.08, 162.03, 2.73, 1.55, 1.57),
    'resnet86_mod': PaperRow('1', 3.92, 25.60, 76.72, 150.96, 2.40, 1.06, 1.05),
    'resnet75_mod': PaperRow('1', 3.48, 23.10, 76.27, 128.90, 2.19, 1.25, 1.15),
    'resnet50': PaperRow('1', 4.13, 25.56, 76.25, 160.66, 2.52, 1.00, 1.00),
    'resnet50_mod': PaperRow('1', 2.60, 18.11, 74.79, 108.74, 1.75, 1.48, 1.44),
    'resnet50_mod_rand': PaperRow('1', 2.59, 17.11, 74.02, 100.06, 1.43, 1.77, 1.43),
    'resnet34': PaperRow('7', 3.68, 21.29, 73.92, 98.83, 1.27),
    'resnet42_mod': PaperRow('7', 2.29, 17.72, 72.03, 64.01, 0.88, 1.54, 1.45),
    'resnet34_mod': PaperRow('7', 2.06, 12.93, 71.44, 60.79, 0.83, 1.63, 1.53),
    'resnet18': PaperRow('7', 1.82, 11.18, 70.37, 53.86, 0.75),
    'resnet26_mod': PaperRow('7', 1.36, 11.40, 69.53, 42.16, 0.58, 1.28, 1.28),
    'resnet18_mod': PaperRow('7', 0.89, 5.46, 64.05, 33.63, 0.47, 1.60, 1.58),
    'resnet86_mod_lk': PaperRow('8', 3.92, 25.60, 76.64, 150.96, 2.40, 1.06, 1.05),
    'resnet75_mod_lk': PaperRow('8', 3.48, 23.10, 76.22, 128.90, 2.19, 1.25, 1.15),
    'resnet50_mod_lk': PaperRow('8', 2.60, 18.11, 74.57, 108.74, 1.75, 1.48, 1.44),
    # Table 2 (ImageNet, 224 px)
    'mobilenetv2_100': PaperRow('2', 0.32036, 3.50, 71.63, 47.76, 0.78),
    'mobilenetv2_mod_l': PaperRow('2', 0.34476, 3.34, 71.55, 42.94, 0.71, 1.11, 1.10),
    'mobilenetv2_mod': PaperRow('2', 0.22056, 2.94, 69.34, 33.43, 0.56, 1.43, 1.39),
    # Table 9 (CIFAR, 32 px; top-1 and times are the CIFAR-10 rows). ResNet34's C10 row prints 1016 MMAC; the
    # architecture gives 1160 (its C100 row), which is used here.
    'resnet18_cifar': PaperRow('9', 0.557, 11.17, 94.04, 15.67, 0.24, params_m_c100=11.22),
    'resnet18_mod_cifar': PaperRow('9', 0.255, 4.95, 92.37, 8.32, 0.14, 1.88, 1.73, 4.99),
    'resnet34_cifar': PaperRow('9', 1.160, 21.28, 93.69, 30.52, 0.42, params_m_c100=21.33),
    'resnet34_mod_cifar': PaperRow('9', 0.633, 12.42, 93.83, 18.10, 0.27, 1.69, 1.54, 12.47),
    'resnet50_cifar': PaperRow('9', 1.310, 23.52, 93.31, 48.47, 0.83, params_m_c100=23.71),
    'resnet50_mod_cifar': PaperRow('9', 0.808, 16.07, 93.24, 33.76, 0.58, 1.44, 1.41, 16.26),
    'vgg16_bn_cifar': PaperRow('9', 0.315, 15.25, 93.27, 8.80, 0.14, params_m_c100=15.30),
    'vgg16_bn_mod_cifar': PaperRow('9', 0.155, 9.83, 91.79, 5.47, 0.16, 1.61, 0.87, 9.88),
    'vgg19_bn_cifar': PaperRow('9', 0.400, 20.57, 93.21, 11.55, 0.18, params_m_c100=20.61),
    'vgg19_bn_mod_cifar': PaperRow('9', 0.155, 9.91, 91.82, 5.81, 0.22, 1.99, 0.81, 9.96),
}

class DensePaperRow(NamedTuple):
    table: str
    tflops: float
    params_m: float
    metrics: Dict[str, float]  # Table 3: aAcc, mIoU, mAcc; Table 4: mAP, AP50 (VOC07 11-point)
    cpu_ms: float
    gpu_ms: float
    speedup_cpu: Optional[float] = None
    speedup_gpu: Optional[float] = None


# Tables 3 (FCN, Cityscapes val, MMSegmentation) and 4 (Faster R-CNN + FPN, VOC 2007, MMDetection), keyed
# '<system>_<backbone>' as timm_mod.dense names them. Table 4's 0.949 TFLOPS for R50-MoD is transcribed as printed
# (the other rows suggest 0.0949).
DENSE_PAPER: Dict[str, DensePaperRow] = {
    'fcn_resnet86_mod': DensePaperRow('3', 0.377, 47.15, dict(aAcc=95.75, mIoU=73.75, mAcc=81.75), 8272.40, 202.65,
                                      1.01, 1.02),
    'fcn_resnet50': DensePaperRow('3', 0.393, 47.11, dict(aAcc=95.68, mIoU=72.80, mAcc=80.25), 8389.35, 206.30),
    'fcn_resnet75_mod': DensePaperRow('3', 0.359, 44.66, dict(aAcc=95.72, mIoU=72.72, mAcc=80.56), 7687.20, 192.50,
                                      1.09, 1.07),
    'fcn_resnet50_mod': DensePaperRow('3', 0.322, 39.66, dict(aAcc=95.37, mIoU=71.58, mAcc=79.54), 6757.20, 166.50,
                                      1.24, 1.24),
    'faster_rcnn_resnet86_mod': DensePaperRow('4', 0.108, 41.486, dict(mAP=77.67, AP50=77.67), 2813.9, 83.5,
                                              1.10, 0.96),
    'faster_rcnn_resnet50': DensePaperRow('4', 0.111, 41.446, dict(mAP=77.30, AP50=77.27), 3101.5, 80.5),
    'faster_rcnn_resnet75_mod': DensePaperRow('4', 0.104, 38.989, dict(mAP=77.04, AP50=77.03), 2784.5, 76.4,
                                              1.11, 1.05),
    'faster_rcnn_resnet50_mod': DensePaperRow('4', 0.949, 33.994, dict(mAP=75.10, AP50=75.10), 2453.3, 69.3,
                                              1.26, 1.16),
}
