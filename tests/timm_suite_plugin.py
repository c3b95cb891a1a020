"""pytest plugin that runs timm's own tests/test_models.py on the models timm_mod registers.

Loaded with ``-p timm_suite_plugin`` before collection, so timm's module-level ``list_models()`` calls already see
our models; collection then keeps only the items parametrized with one of our model names (tagged or not).
"""
import pytest

import timm_mod

OURS = set(timm_mod.list_models())
# These download the weights of every tag in timm_mod's PUBLISHED from the Hub (they collect none while it is empty),
# and this machine has no network. The offline loading routes are tested in tests/tools/test_hub.py through a
# locally laid-out Hub cache instead.
NEEDS_PUBLISHED_WEIGHTS = ('test_model_load_pretrained', 'test_model_features_pretrained')


def pytest_collection_modifyitems(config, items):
    keep, drop = [], []
    for item in items:
        params = getattr(getattr(item, 'callspec', None), 'params', {})
        name = str(params.get('model_name', '')).split('.')[0]  # tagged names: 'resnet50_mod.in1k'
        (keep if name in OURS else drop).append(item)
        if name in OURS and item.originalname in NEEDS_PUBLISHED_WEIGHTS:
            item.add_marker(pytest.mark.skip(reason='no timm_mod weights are published on the Hub yet'))
    config.hook.pytest_deselected(items=drop)
    items[:] = keep
