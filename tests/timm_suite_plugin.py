"""pytest plugin that runs timm's own tests/test_models.py on the models timm_mod registers.

Loaded with ``-p timm_suite_plugin`` before collection, so timm's module-level ``list_models()`` calls already see
our models; collection then keeps only the items parametrized with one of our model names.
"""
import timm_mod

OURS = set(timm_mod.list_models())


def pytest_collection_modifyitems(config, items):
    keep, drop = [], []
    for item in items:
        params = getattr(getattr(item, 'callspec', None), 'params', {})
        (keep if params.get('model_name') in OURS else drop).append(item)
    config.hook.pytest_deselected(items=drop)
    items[:] = keep
