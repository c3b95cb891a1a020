"""CNN Mixture-of-Depths layers: the channel selector and the MoD block wrapper.

Paper: `CNN Mixture-of-Depths` - Rinor Cakaj, Jens Mehnert, Bin Yang (ACCV 2024)
    https://arxiv.org/abs/2409.17016

A MoD block scores the C channels of its input (squeeze-excitation style), routes each sample's top k = C // c
channels through a block built for k channels, scales the result by the selected scores and adds it to a fixed set
of k channels of the input (the first k by default). k is a constant of the block, so every shape is static.

Nothing here knows about a model family: the wrapped block comes from a `block_fn(k)` callable.
"""
from typing import Any, Callable, Dict, Optional, Tuple

import torch
import torch.nn as nn
from timm.layers import register_notrace_function

__all__ = ['ChannelSelector', 'MoDBlock', 'mod_num_selected', 'select_channels', 'FUSIONS', 'ROUTINGS']

FUSIONS = ('first', 'last', 'original')
ROUTINGS = ('topk', 'random')


def mod_num_selected(channels: int, c: int, name: str = 'MoD block') -> int:
    """Number of processed channels k = C // c, validated.

    Args:
        channels: Channels C of the block input.
        c: Channel reduction hyperparameter of the paper.
        name: What to call the block in the error message.

    Raises:
        ValueError: if c is not a positive int or k would be < 1.
    """
    if isinstance(c, bool) or not isinstance(c, int) or c < 1:
        raise ValueError(f'{name}: mod_c must be a positive integer, got {c!r}')
    k = channels // c
    if k < 1:
        raise ValueError(
            f'{name}: k = C // c = {channels} // {c} = {k}; a MoD block needs k >= 1, so mod_c must be <= {channels}')
    return k


def _channel_index(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """(B, k) channel indices expanded to (B, k, H, W) for gather / scatter along dim 1."""
    return idx[:, :, None, None].expand(x.shape[0], idx.shape[1], x.shape[2], x.shape[3])


@register_notrace_function  # branches on the memory format: FX keeps it as one call
def select_channels(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """x[b, idx[b]] for every sample b: (B, C, H, W) -> (B, k, H, W), keeping x's memory format.

    Contiguous NCHW: one index_select of whole H x W planes (a copy of k planes per sample). channels_last: a gather
    along the innermost (channel) dimension of the NHWC view, so the result stays channels_last.
    """
    B, C, H, W = x.shape
    k = idx.shape[1]
    if x.is_contiguous():
        if B == 1:  # the paper's latency setting: one index_select, no per-sample offsets
            return x.index_select(1, idx.reshape(k))
        flat = (idx + torch.arange(0, B * C, C, device=idx.device).reshape(B, 1)).reshape(B * k)
        return x.reshape(B * C, H, W).index_select(0, flat).reshape(B, k, H, W)
    if x.is_contiguous(memory_format=torch.channels_last):
        nhwc = x.permute(0, 2, 3, 1)
        return nhwc.gather(3, idx[:, None, None, :].expand(B, H, W, k)).permute(0, 3, 1, 2)
    return x.gather(1, _channel_index(x, idx))


class _ChannelMean(torch.autograd.Function):
    """x.mean((2, 3)) whose backward returns a broadcast view instead of materialising a C x H x W gradient."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.shape = x.shape
        return x.mean((2, 3))

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        B, C, H, W = ctx.shape
        return (grad / (H * W))[:, :, None, None].expand(B, C, H, W)


class _FuseAdd(torch.autograd.Function):
    """out = x with channels [start, start + k) += scores * y, built out of place.

    Autograd's own version (slice, add, concatenate) allocates and zero-fills C-channel gradients for each slice;
    here the gradient of x is the output gradient itself and y, scores get theirs from its k fused channels.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, y: torch.Tensor, scores: Optional[torch.Tensor], start: int) -> torch.Tensor:
        ctx.start = start
        ctx.save_for_backward(y, scores)
        out = x.clone()
        dst = out.narrow(1, start, y.shape[1])
        if scores is None:
            dst.add_(y)
        else:
            dst.addcmul_(y, scores)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        y, scores = ctx.saved_tensors
        g = grad.narrow(1, ctx.start, y.shape[1])
        grad_y = grad_scores = None
        if ctx.needs_input_grad[1]:
            grad_y = g if scores is None else g * scores
        if scores is not None and ctx.needs_input_grad[2]:
            grad_scores = (g * y).sum((2, 3), keepdim=True)
        return grad, grad_y, grad_scores, None


@register_notrace_function  # FX keeps custom autograd functions as single calls
def channel_mean(x: torch.Tensor) -> torch.Tensor:
    """Per-channel spatial mean, (B, C, H, W) -> (B, C)."""
    if torch.jit.is_scripting():  # TorchScript has no custom autograd functions (an FX graph may get scripted)
        return x.mean((2, 3))
    else:
        return _ChannelMean.apply(x)


@register_notrace_function
def fuse_add(x: torch.Tensor, y: torch.Tensor, scores: Optional[torch.Tensor], start: int) -> torch.Tensor:
    """x with scores * y added to channels [start, start + y.shape[1]).

    Without autograd (inference) the update goes into x in place, touching only those channels: x is the output of
    the block before, which nothing else reads. With autograd x may be saved for that block's backward (an in-place
    ReLU's output), so the result is built out of place by `_FuseAdd`. One FX leaf, so a traced graph keeps the
    in-place update (it would otherwise be dropped as a node without users).
    """
    k = y.shape[1]
    dst = x.narrow(1, start, k)
    if torch.jit.is_scripting():  # TorchScript has no custom autograd functions: plain out-of-place ops
        fused = dst + y if scores is None else torch.addcmul(dst, y, scores)
        return torch.cat([x[:, :start], fused, x[:, start + k:]], dim=1)
    else:
        if not torch.is_grad_enabled():
            if scores is None:
                dst.add_(y)
            else:
                dst.addcmul_(y, scores)
            return x
        return _FuseAdd.apply(x, y, scores, start)


@register_notrace_function  # draws from an RNG: FX keeps it as one call
def random_channels(x: torch.Tensor, k: int, training: bool, seed: int) -> torch.Tensor:
    """k channel indices per sample drawn uniformly without replacement, (B, k).

    Training draws from torch's RNG; eval from a generator seeded with `seed`, so evaluation is reproducible.
    """
    shape = (x.shape[0], x.shape[1])
    if training or x.is_meta:  # meta tensors have no generator (and no values to reproduce)
        noise = torch.rand(shape, device=x.device)
    else:
        gen = torch.Generator(device=x.device)
        gen.manual_seed(seed)
        noise = torch.rand(shape, generator=gen, device=x.device)
    return noise.topk(k, dim=1)[1]


class ChannelSelector(nn.Module):
    """Scores channels and picks each sample's top-k (paper Sec. 3.1, Fig. 2).

    adaptive avg-pool -> Linear(C, C // r) -> ReLU -> Linear(C // r, C) -> sigmoid -> top-k. The linear layers are
    bias-free: the paper's parameter counts reproduce only that way.
    """

    def __init__(
            self,
            channels: int,
            k: int,
            reduction: int = 16,
            device=None,
            dtype=None,
    ):
        """
        Args:
            channels: Input channels C.
            k: Channels to select per sample.
            reduction: Bottleneck ratio r of the scoring MLP.
        """
        dd = {'device': device, 'dtype': dtype}
        super().__init__()
        if not 1 <= k <= channels:
            raise ValueError(f'ChannelSelector: k must be in [1, {channels}], got {k}')
        self.k = k
        hidden = max(1, channels // reduction)
        self.fc1 = nn.Linear(channels, hidden, bias=False, **dd)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Linear(hidden, channels, bias=False, **dd)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Returns the selected scores and channel indices, both (B, k), in descending score order."""
        if torch.jit.is_tracing() or not torch.is_grad_enabled():
            s = x.mean((2, 3))
        else:
            s = channel_mean(x)
        s = self.fc2(self.act(self.fc1(s))).sigmoid()
        return s.topk(self.k, dim=1)


class MoDBlock(nn.Module):
    """Mixture-of-Depths wrapper around any block that maps k channels to k channels (paper Sec. 3).

    The block sees each sample's selected channels in descending score order, its output is multiplied by those
    scores (the path by which the selector learns) and fused back into the C-channel input:

    * ``first``: added to channels [0, k) (paper eq. 1-2),
    * ``last``: added to channels [C - k, C) (MoD-lk, Table 8),
    * ``original``: added back at the selected channel positions (Table 10, "OP").

    Routing ``topk`` uses the learned `ChannelSelector`; ``random`` (the "MoD50 rand." baseline of Table 1) picks k
    channels per sample uniformly at random, has no parameters and no score scaling. Random draws come from torch's
    RNG in training (activation checkpointing restores that state, so a recompute draws the same channels) and from
    a generator seeded with ``routing_seed`` in eval, so evaluation is reproducible.
    """

    def __init__(
            self,
            channels: int,
            block_fn: Callable[[int], nn.Module],
            c: int = 64,
            reduction: int = 16,
            fusion: str = 'first',
            routing: str = 'topk',
            drop_path: Optional[nn.Module] = None,
            routing_seed: int = 0,
            name: str = 'MoD block',
            device=None,
            dtype=None,
    ):
        """
        Args:
            channels: Channels C of the block input and output.
            block_fn: Builds the processing block for k channels, called once as ``block_fn(k)``.
            c: Channel reduction: k = C // c.
            reduction: Ratio r of the selector's MLP.
            fusion: 'first', 'last' or 'original'.
            routing: 'topk' or 'random'.
            drop_path: Optional stochastic-depth module applied to the block's scaled output.
            routing_seed: Seed of the eval-mode draws of random routing.
            name: What to call this block in error messages (e.g. 'layer3.1').
        """
        dd = {'device': device, 'dtype': dtype}
        super().__init__()
        if fusion not in FUSIONS:
            raise ValueError(f'{name}: unknown mod_fusion {fusion!r}, expected one of {FUSIONS}')
        if routing not in ROUTINGS:
            raise ValueError(f'{name}: unknown mod_routing {routing!r}, expected one of {ROUTINGS}')
        self.channels = channels
        self.k = mod_num_selected(channels, c, name)
        self.fusion = fusion
        self.routing = routing
        self.routing_seed = routing_seed
        self.selector = ChannelSelector(channels, self.k, reduction, **dd) if routing == 'topk' else None
        self.block = block_fn(self.k)
        self.drop_path = drop_path if drop_path is not None else nn.Identity()

    def route(self, x: torch.Tensor) -> Tuple[Optional[torch.Tensor], torch.Tensor]:
        """Selected scores (None for random routing) and channel indices, each (B, k)."""
        if self.selector is not None:
            scores, idx = self.selector(x)
            return scores, idx
        return None, random_channels(x, self.k, self.training, self.routing_seed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scores, idx = self.route(x)
        y = self.block(select_channels(x, idx))
        if scores is not None:
            scores = scores.reshape(-1, self.k, 1, 1).to(y.dtype)  # autocast may have run the block in fp16/bf16
        if not isinstance(self.drop_path, nn.Identity):
            if scores is not None:
                y, scores = y * scores, None  # stochastic depth drops the whole scaled update
            y = self.drop_path(y)
        return self.fuse(x, y, scores, idx)

    def fuse(
            self,
            x: torch.Tensor,
            y: torch.Tensor,
            scores: Optional[torch.Tensor],
            idx: torch.Tensor,
    ) -> torch.Tensor:
        """x + scores * y at the fusion's k channels; every other channel of x passes through (see `fuse_add`)."""
        k = self.k
        if self.fusion == 'original':
            update = y if scores is None else y * scores
            index = _channel_index(x, idx)
            inplace = not torch.is_grad_enabled() and not torch.jit.is_tracing()
            return x.scatter_add_(1, index, update) if inplace else x.scatter_add(1, index, update)
        start = 0 if self.fusion == 'first' else x.shape[1] - k
        if torch.jit.is_tracing():  # jit tracing (ONNX export) gets plain out-of-place ops, no custom autograd
            dst = x.narrow(1, start, k)
            fused = dst + y if scores is None else torch.addcmul(dst, y, scores)
            return torch.cat([x[:, :start], fused, x[:, start + k:]], dim=1)
        return fuse_add(x, y, scores, start)

    def feature_info(self, location: str) -> Dict[str, Any]:
        """Feature hook info for timm's EfficientNet feature extraction: a MoD block keeps its C channels."""
        return dict(module='', num_chs=self.channels)

    def extra_repr(self) -> str:
        return f'channels={self.channels}, k={self.k}, fusion={self.fusion}, routing={self.routing}'
