"""The tools' optional packages: a missing one fails saying which timm-mod extra installs it.

``import timm_mod`` needs only torch, timm, huggingface_hub and safetensors; the tools import their other packages
where they use them, through `import_extra`.
"""
import importlib
from types import ModuleType

__all__ = ['import_extra']


def import_extra(module: str, extra: str, purpose: str) -> ModuleType:
    """Import `module`, or raise an ImportError that names the pip install providing it.

    Args:
        module: The module to import, e.g. 'fvcore.nn'.
        extra: The extra of timm-mod's pyproject.toml that installs its package, e.g. 'tools'.
        purpose: What needs it, the start of the message, e.g. 'counting MACs'.
    """
    try:
        return importlib.import_module(module)
    except ImportError as e:
        package = module.partition('.')[0]
        raise ImportError(f'{purpose} needs {package}: pip install "timm-mod[{extra}]"', name=package) from e
