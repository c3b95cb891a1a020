"""Deprecated names of modules that moved when the package was split into library, tools and dense systems.

``import timm_mod.bench`` and ``python -m timm_mod.bench`` keep working for one release: they warn and run the
module at its new place (``timm_mod.tools.bench``), the same module object, so nothing is imported twice.
"""
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import warnings
from types import ModuleType
from typing import Optional

__all__ = ['MOVED', 'install']

MOVED = {
    **{f'timm_mod.{name}': f'timm_mod.tools.{name}' for name in (
        'train', 'run', 'hub', 'bench', 'breakdown', 'report', 'table', 'selection', 'complexity', 'paper')},
    **{f'timm_mod.{name}': f'timm_mod.dense.{name}' for name in (
        'segmentation', 'detection', 'voc_eval', 'backbone')},
    'timm_mod.dense_data': 'timm_mod.dense.data',
}


class _MovedModuleLoader(importlib.abc.Loader):
    """Loads an old name as the module at its new place; `get_code` serves ``python -m old.name``."""

    def __init__(self, new_name: str):
        self.new_name = new_name

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        return importlib.import_module(self.new_name)

    def exec_module(self, module: ModuleType) -> None:
        pass  # executed under its new name by create_module

    def get_code(self, fullname: str):
        return importlib.util.find_spec(self.new_name).loader.get_code(self.new_name)


class _MovedModuleSpec(importlib.machinery.ModuleSpec):
    """Spec of an old name whose package is the new one's, so ``python -m`` resolves the module's relative imports."""

    @property
    def parent(self) -> str:
        return self.loader.new_name.rpartition('.')[0]


class _MovedModuleFinder(importlib.abc.MetaPathFinder):

    def find_spec(self, fullname: str, path=None, target=None) -> Optional[importlib.machinery.ModuleSpec]:
        new_name = MOVED.get(fullname)
        if new_name is None:
            return None
        warnings.warn(
            f'{fullname} moved to {new_name}; the old name will be removed in timm-mod 0.3', FutureWarning,
            stacklevel=2)
        origin = importlib.util.find_spec(new_name).origin  # runpy makes it sys.argv[0]
        return _MovedModuleSpec(fullname, _MovedModuleLoader(new_name), origin=origin)


def install() -> None:
    """Put the finder on sys.meta_path once."""
    if not any(isinstance(f, _MovedModuleFinder) for f in sys.meta_path):
        sys.meta_path.append(_MovedModuleFinder())
