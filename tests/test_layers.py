"""The MoD mechanism: channel selection, routing and the three fusions, independent of any model family."""
import pytest
import torch
import torch.nn as nn
from torch.utils.checkpoint import checkpoint

from mod_cases import tied_block
from parity import reference_forward  # benchmarks/parity.py: gather, block, multiply, concatenate / scatter_add
from timm_mod import ChannelSelector, MoDBlock

C, H, W = 32, 5, 5


class Recorder(nn.Module):
    """A k -> k block that doubles its input and remembers what it saw."""

    def __init__(self, k: int):
        super().__init__()
        self.conv = nn.Conv2d(k, k, 1, bias=False)  # a parameter, so the block is a real trainable block
        nn.init.dirac_(self.conv.weight)
        self.seen = None

    def forward(self, x):
        self.seen = x.detach().clone()
        return 2 * self.conv(x)


def _reference_selection(block: MoDBlock, x: torch.Tensor):
    """Scores and indices computed by hand from the selector's weights (not through its forward)."""
    sel = block.selector
    s = torch.sigmoid(torch.relu(x.mean((2, 3)) @ sel.fc1.weight.t()) @ sel.fc2.weight.t())
    order = torch.argsort(s, dim=1, descending=True)[:, :block.k]
    return s.gather(1, order), order


def _make(fusion='first', routing='topk', c=8):
    torch.manual_seed(0)
    return MoDBlock(C, Recorder, c=c, reduction=4, fusion=fusion, routing=routing).eval()


def test_k_is_channels_floor_div_c():
    assert _make(c=8).k == 4
    assert MoDBlock(30, Recorder, c=8).k == 3


def test_first_fusion_adds_to_first_k_and_leaves_the_rest_untouched():
    block = _make('first')
    x = torch.randn(3, C, H, W)
    out = block(x)
    scores, idx = _reference_selection(block, x)
    k = block.k
    selected = torch.stack([x[b, idx[b]] for b in range(x.shape[0])])
    expected = x[:, :k] + 2 * selected * scores[:, :, None, None]
    torch.testing.assert_close(out[:, :k], expected)
    assert torch.equal(out[:, k:], x[:, k:])


def test_last_fusion_adds_to_last_k():
    block = _make('last')
    x = torch.randn(3, C, H, W)
    out = block(x)
    scores, idx = _reference_selection(block, x)
    k = block.k
    selected = torch.stack([x[b, idx[b]] for b in range(x.shape[0])])
    torch.testing.assert_close(out[:, C - k:], x[:, C - k:] + 2 * selected * scores[:, :, None, None])
    assert torch.equal(out[:, :C - k], x[:, :C - k])


def test_original_fusion_adds_back_at_selected_positions():
    block = _make('original')
    x = torch.randn(3, C, H, W)
    out = block(x)
    scores, idx = _reference_selection(block, x)
    for b in range(x.shape[0]):
        chosen = set(idx[b].tolist())
        for ch in range(C):
            if ch in chosen:
                j = idx[b].tolist().index(ch)
                torch.testing.assert_close(out[b, ch], x[b, ch] * (1 + 2 * scores[b, j]))
            else:
                assert torch.equal(out[b, ch], x[b, ch])


def test_block_sees_selected_channels_in_descending_score_order():
    block = _make()
    x = torch.randn(2, C, H, W)
    block(x)
    _, idx = _reference_selection(block, x)
    for b in range(2):
        assert torch.equal(block.block.seen[b], x[b, idx[b]])


def test_routing_is_per_sample():
    block = _make()
    x = torch.randn(4, C, H, W)
    batched = block(x)
    for b in range(4):
        torch.testing.assert_close(block(x[b:b + 1])[0], batched[b])
    _, idx = _reference_selection(block, x)
    assert len({tuple(sorted(i.tolist())) for i in idx}) > 1, 'all samples picked the same channels'


def test_selector_receives_gradients_through_the_score_scaling():
    block = _make().train()
    block(torch.randn(2, C, H, W)).square().sum().backward()
    for name, p in block.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_output_shape_is_static():
    block = _make()
    for b in (1, 3):
        assert block(torch.randn(b, C, 7, 9)).shape == (b, C, 7, 9)


def test_k_below_one_fails_at_construction_naming_block_c_and_C():
    with pytest.raises(ValueError, match=r'layer1\.1.*32 // 64'):
        MoDBlock(32, Recorder, c=64, name='layer1.1')


@pytest.mark.parametrize('c', [0, -1, 2.5, '8'])
def test_bad_c_fails(c):
    with pytest.raises(ValueError, match='mod_c'):
        MoDBlock(C, Recorder, c=c)


def test_unknown_fusion_and_routing_fail():
    with pytest.raises(ValueError, match='mod_fusion'):
        MoDBlock(C, Recorder, c=8, fusion='middle')
    with pytest.raises(ValueError, match='mod_routing'):
        MoDBlock(C, Recorder, c=8, routing='best')


@pytest.mark.parametrize('reduction', [0, -4, True, 2.5, C + 1])
def test_bad_reduction_fails_naming_the_block(reduction):
    with pytest.raises(ValueError, match=r'layer1\.1: mod_reduction must be an integer from 1 to .*32 channels'):
        MoDBlock(C, Recorder, c=8, reduction=reduction, name='layer1.1')


def test_selector_returns_topk_of_its_scores():
    torch.manual_seed(0)
    sel = ChannelSelector(C, 5, reduction=4)
    scores, idx = sel(torch.randn(2, C, H, W))
    assert scores.shape == idx.shape == (2, 5)
    assert (scores[:, :-1] >= scores[:, 1:]).all()
    assert not any(p.numel() == C for p in (sel.fc1.bias, sel.fc2.bias) if p is not None)


def test_random_routing_has_no_selector_and_no_parameters_beyond_the_block():
    block = _make(routing='random')
    assert block.selector is None
    assert sum(p.numel() for p in block.parameters()) == sum(p.numel() for p in block.block.parameters())


def test_random_routing_is_reproducible_in_eval_and_random_in_training():
    block = _make(routing='random')
    x = torch.randn(8, C, H, W)
    assert torch.equal(block(x), block(x))
    block.train()
    picks = {tuple(block.route(x)[1][0].tolist()) for _ in range(5)}
    assert len(picks) > 1


@pytest.mark.parametrize('routing', ['topk', 'random'])
def test_checkpoint_recompute_selects_the_same_channels(routing):
    block = _make(routing=routing).train()
    x = torch.randn(4, C, H, W)

    def grads(use_checkpoint):
        block.zero_grad()
        inp = x.clone().requires_grad_()
        torch.manual_seed(123)
        out = checkpoint(block, inp, use_reentrant=False) if use_checkpoint else block(inp)
        out.square().sum().backward()
        return inp.grad

    torch.testing.assert_close(grads(True), grads(False))


class ConvBlock(nn.Module):
    def __init__(self, k):
        super().__init__()
        self.conv = nn.Conv2d(k, k, 3, padding=1)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.act(self.conv(x))


@pytest.mark.parametrize('fusion', ['first', 'last', 'original'])
@pytest.mark.parametrize('channels_last', [False, True])
@pytest.mark.parametrize('batch', [1, 3])  # batch 1 has its own gather
def test_fast_inference_path_matches_the_naive_mechanism(fusion, channels_last, batch):
    torch.manual_seed(0)
    block = MoDBlock(C, ConvBlock, c=8, reduction=4, fusion=fusion).eval()
    x = torch.randn(batch, C, H, W)
    expected = reference_forward(block, x)
    fast_in = x.contiguous(memory_format=torch.channels_last) if channels_last else x.clone()
    with torch.inference_mode():
        out = block(fast_in)
    torch.testing.assert_close(out, expected)
    if channels_last:
        assert out.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize('fusion', ['first', 'last', 'original'])
@pytest.mark.parametrize('channels_last', [False, True])
@pytest.mark.parametrize('batch', [1, 3])
def test_training_path_matches_the_naive_mechanism_with_gradients(fusion, channels_last, batch):
    torch.manual_seed(0)
    block = MoDBlock(C, ConvBlock, c=8, reduction=4, fusion=fusion).train()
    x = torch.randn(batch, C, H, W)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    grads = []
    for fn in (block, lambda t: reference_forward(block, t)):
        block.zero_grad()
        inp = x.clone().requires_grad_()
        # a ReLU before the block, as in a network: its output must survive for its own backward
        out = fn(torch.relu(inp))
        # the same values in any memory format
        (out * torch.randn(out.shape, generator=torch.Generator().manual_seed(1))).sum().backward()
        grads.append([inp.grad] + [p.grad.clone() for p in block.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize('fusion', ['first', 'last', 'original'])
@pytest.mark.parametrize('routing', ['topk', 'random'])
@pytest.mark.parametrize('grad', [False, True])
def test_forward_never_changes_its_input(fusion, routing, grad):
    """Whoever else holds the input (a hook's capture, a feature extractor's output) must keep seeing its values."""
    block = _make(fusion, routing)
    x = torch.randn(2, C, H, W)
    before = x.clone()
    with torch.set_grad_enabled(grad):
        out = block(x)
    assert torch.equal(x, before)
    assert out.data_ptr() != x.data_ptr()


# --- precision: the ranking is computed in float32 whatever the model runs in, in float64 for a float64 model

def _float32_logits(sel: ChannelSelector, x: torch.Tensor) -> torch.Tensor:
    """The selector's logits computed by hand in float64 from the same input, rounded to float32."""
    s = x.double().mean((2, 3))
    return (torch.relu(s @ sel.fc1.weight.double().t()) @ sel.fc2.weight.double().t()).float()


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
@pytest.mark.parametrize('how', ['autocast', 'model'])
def test_half_precision_ranks_like_float32_on_the_same_input(dtype, how):
    torch.manual_seed(0)
    sel = ChannelSelector(256, 16, reduction=16).eval()
    x = torch.randn(3, 256, 7, 7).to(dtype)  # a feature map the half-precision network computed
    expected = _float32_logits(sel, x)
    if how == 'model':
        sel = sel.to(dtype)
        weights = ChannelSelector(256, 16, reduction=16)
        weights.load_state_dict({k: v.float() for k, v in sel.state_dict().items()})
        expected = _float32_logits(weights, x)
    with torch.no_grad(), torch.autocast('cpu', dtype=dtype, enabled=how == 'autocast'):
        logits = sel.logits(x)
        _, idx = sel(x)
    assert logits.dtype == torch.float32
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-6)
    assert torch.equal(idx, expected.topk(16, dim=1)[1])


def test_a_float64_model_ranks_and_scores_in_float64_with_exact_gradients():
    torch.manual_seed(0)
    block = MoDBlock(C, Recorder, c=8, reduction=4).double()
    x = torch.randn(2, C, H, W, dtype=torch.float64, requires_grad=True)
    assert block.selector.logits(x).dtype == torch.float64 and block.selector(x)[0].dtype == torch.float64
    assert torch.autograd.gradcheck(lambda t: block(t), (x,))


def test_a_model_built_on_the_meta_device_gets_its_tie_break_when_materialised():
    sel = ChannelSelector(C, 4, reduction=4, device='meta').to_empty(device='cpu')
    assert torch.equal(sel.channel_index, torch.arange(C, dtype=torch.int32))
    with torch.no_grad():
        sel.fc2.weight.zero_()  # every logit 0: exact ties, decided by the tie-break alone
        sel.fc1.weight.normal_()
    assert torch.equal(sel(torch.randn(2, C, H, W))[1], torch.arange(4).expand(2, 4))


# --- ties and the ranking key, independent of any runtime

def test_selector_breaks_exact_ties_by_lower_channel_index():
    block = tied_block()
    x = torch.rand(3, 16, 4, 4)  # positive, so the all-negative fc1 makes every hidden unit zero
    scores, idx = block.selector(x)
    assert torch.equal(idx, torch.arange(4).expand(3, 4))
    assert torch.equal(scores, torch.full((3, 4), 0.5))




def test_selector_ranks_by_logit_and_scores_are_their_sigmoid():
    torch.manual_seed(0)
    sel = ChannelSelector(32, 5, reduction=4)
    x = torch.randn(2, 32, 3, 3)
    logits = sel.fc2(torch.relu(sel.fc1(x.mean((2, 3)))))
    scores, idx = sel(x)
    torch.testing.assert_close(idx, logits.argsort(dim=1, descending=True)[:, :5])
    torch.testing.assert_close(scores, logits.gather(1, idx).sigmoid())
