"""timm_mod: CNN Mixture-of-Depths models for timm.

Importing this package registers its models with timm, so ``timm.create_model('resnet75_mod')`` works, and
``timm_mod.mod(name_or_model)`` converts a timm CNN into its MoD version.

The package has three parts:

* the model library, what ``import timm_mod`` loads: `layers` (the MoD block), `convert` (`timm_mod.mod` and the
  block adapters), `models` (the registered families), `baseline` (`timm_mod.init_from_baseline`: start a MoD model
  from its pretrained baseline) and `checkpoint` (reading train.py checkpoints safely);
* `timm_mod.tools`: command-line tools (``python -m timm_mod.tools.<tool>``): training launchers, Hub export,
  benchmarks and the paper's analyses;
* `timm_mod.dense`: the paper's segmentation and detection systems (``python -m timm_mod.dense``).
"""
from .version import __version__
from .layers import ChannelSelector, MoDBlock
from .convert import mod, mod_stage, register_block_adapter
from .baseline import BaselineTransfer, init_from_baseline, load_baseline
from .models import *
from .models import MODEL_MODULES, list_models

