"""Every registered model compiles as one graph (no graph break) in training and in eval, and matches eager."""
import pytest
import timm
import torch

import timm_mod
from tiers import slow_cases

# the fast tier's representatives: dynamo traces every op of a model, so the small CIFAR models stand for the rest
FAST = ('resnet18_mod_cifar', 'vgg16_bn_mod_cifar')


def _input(name: str) -> torch.Tensor:
    size = 32 if name.endswith('_cifar') else 64
    return torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize('name', slow_cases(timm_mod.list_models(), FAST))
def test_compiles_as_one_graph_in_eval_and_matches_eager(name):
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = timm.create_model(name).eval()
    x = _input(name)
    compiled = torch.compile(model, fullgraph=True, backend='eager')  # fullgraph: a graph break raises
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x))


@pytest.mark.parametrize('name', slow_cases(timm_mod.list_models(), FAST[:1]))
def test_compiles_as_one_graph_in_training_and_matches_eager_gradients(name):
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = timm.create_model(name).train()
    x = _input(name)
    compiled = torch.compile(model, fullgraph=True, backend='aot_eager')  # aot_eager: traced backward too
    grads = []
    for fn in (compiled, model):
        model.zero_grad()
        torch.manual_seed(123)  # random routing draws its training channels from torch's RNG
        fn(x).square().mean().backward()
        grads.append([p.grad.clone() for p in model.parameters() if p.grad is not None])
    assert len(grads[0]) == len(grads[1]) > 0
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize('name', ['resnet50_mod', 'mobilenetv2_mod', 'resnet50_mod_rand'])
def test_inductor_matches_eager(name):
    """The generated code itself, not just the captured graph: inductor's fused kernels against eager."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = timm.create_model(name).eval()
    x = _input(name)
    with torch.no_grad():
        torch.testing.assert_close(torch.compile(model)(x), model(x), rtol=1e-4, atol=1e-4)
