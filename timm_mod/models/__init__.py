from typing import List

from timm.models import list_models as _timm_list_models

from .mod_cifar import *
from .mod_mobilenetv2 import *
from .mod_resnet import *
from .mod_timm import *

# timm groups models by the basename of the module that registers them
MODEL_MODULES = ('mod_resnet', 'mod_mobilenetv2', 'mod_cifar', 'mod_timm')


def list_models(filter: str = '', pretrained: bool = False) -> List[str]:
    """Names of the models that timm_mod registers (timm's `list_models` restricted to our modules)."""
    return _timm_list_models(filter or '', module=list(MODEL_MODULES), pretrained=pretrained)
