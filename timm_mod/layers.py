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
import torch.fx
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import register_notrace_function

__all__ = [
    'ChannelSelector', 'MoDBlock', 'check_reduction', 'mod_num_selected', 'select_channels', 'selector_logits',
    'FUSIONS', 'ROUTINGS']

FUSIONS = ('first', 'last', 'original')
ROUTINGS = ('topk', 'random')



def _ranking_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the channel selector scores in: float32, or the input's dtype where that is wider (float64).

    In float16 or bfloat16 the logits of different channels round to the same value and the ranking changes with
    the precision; in float32 the selection is what a float32 model selects but for true near-ties. The selector
    reads C numbers per sample and multiplies two C x C / r matrices, so float32 costs next to nothing.
    """
    return dtype if dtype == torch.float64 else torch.float32


def check_reduction(reduction: int, channels: int, name: str = 'ChannelSelector') -> None:
    """Validate the selector's bottleneck ratio r: a positive integer, at most C (its hidden layer has C // r units).

    Raises:
        ValueError: naming the block, C and the value given.
    """
    if isinstance(reduction, bool) or not isinstance(reduction, int) or not 1 <= reduction <= channels:
        raise ValueError(f'{name}: mod_reduction must be an integer from 1 to the block\'s {channels} channels (the '
                         f'selector has C // r hidden units), got {reduction!r}')


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


def _recording_graph() -> bool:
    """Whether the forward is being recorded as a graph for another runtime rather than run.

    True under jit tracing (TorchScript ONNX export, OpenVINO's converter) and both ONNX exporters. Such a graph has
    no in-place updates and no Python branches on the batch size, and it must serve every batch size.
    """
    if torch.jit.is_scripting():  # TorchScript compiles only this branch
        return False
    else:
        return torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()


def _eager() -> bool:
    """Whether PyTorch runs the forward eagerly: not traced, exported, compiled or scripted."""
    if torch.jit.is_scripting():
        return False
    else:
        return not (torch.compiler.is_compiling() or _recording_graph())


def _channel_index(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """(B, k) channel indices expanded to (B, k, H, W) for gather / scatter along dim 1."""
    return idx[:, :, None, None].expand(-1, -1, x.shape[2], x.shape[3])


@register_notrace_function  # FX (timm's feature extraction) keeps it as one call
@torch.fx.wrap  # so does any other FX tracer (torchvision's feature extraction)
def select_channels(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """x[b, idx[b]] for every sample b: (B, C, H, W) -> (B, k, H, W), keeping x's memory format.

    Contiguous NCHW: one index_select of whole H x W planes, at offsets b * C into the (B * C, H, W) view (the same
    graph serves every batch size). channels_last: a gather along the innermost (channel) dimension of the NHWC view,
    so the result stays channels_last.
    """
    B, C, H, W = x.shape
    k = idx.shape[1]
    if x.is_contiguous():
        if _eager() and B == 1:
            return x.index_select(1, idx.reshape(k))  # eager batch 1 (the paper's latency setting): no offsets
        flat = (idx + torch.arange(0, B * C, C, device=idx.device).reshape(B, 1)).reshape(B * k)
        return x.reshape(B * C, H, W).index_select(0, flat).reshape(B, k, H, W)
    if x.is_contiguous(memory_format=torch.channels_last):
        nhwc = x.permute(0, 2, 3, 1)
        return nhwc.gather(3, idx[:, None, None, :].expand(B, H, W, k)).permute(0, 3, 1, 2)
    return x.gather(1, _channel_index(x, idx))


class _ChannelMean(torch.autograd.Function):
    """x.mean((2, 3), dtype=dtype) whose backward returns a broadcast view instead of materialising a C x H x W
    gradient."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        ctx.shape, ctx.dtype = x.shape, x.dtype
        return x.mean((2, 3), dtype=dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        B, C, H, W = ctx.shape
        return (grad / (H * W)).to(ctx.dtype)[:, :, None, None].expand(B, C, H, W), None


def _placement(channels: int, k: int, start: int, like: torch.Tensor) -> torch.Tensor:
    """The one-hot (C, k, 1, 1) weight of a 1x1 convolution that puts k channels at [start, start + k) of C."""
    rows = torch.arange(channels, device=like.device)[:, None]
    cols = torch.arange(k, device=like.device)[None, :] + start
    return (rows == cols).to(like.dtype)[:, :, None, None]


def _fused_copy(x: torch.Tensor, y: torch.Tensor, scores: Optional[torch.Tensor], start: int) -> torch.Tensor:
    """A copy of x with scores * y added to channels [start, start + k): the update goes into the copy, never into x.

    x may be held elsewhere: a forward hook's capture, a feature extractor's output, an in-place ReLU's output saved
    for its own backward. One pass copies x; the k fused channels are then updated in place in the copy.
    """
    out = x.clone()
    dst = out.narrow(1, start, y.shape[1])
    if scores is None:
        dst.add_(y)
    else:
        dst.addcmul_(y, scores)
    return out


class _FuseAdd(torch.autograd.Function):
    """`_fused_copy` with a backward that keeps to the k fused channels.

    Autograd's own version (slice, add, concatenate) allocates and zero-fills C-channel gradients for each slice;
    here the gradient of x is the output gradient itself and y, scores get theirs from its k fused channels.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, y: torch.Tensor, scores: Optional[torch.Tensor], start: int) -> torch.Tensor:
        ctx.start = start
        ctx.save_for_backward(y, scores)
        return _fused_copy(x, y, scores, start)

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
@torch.fx.wrap
def channel_mean(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Per-channel spatial mean, (B, C, H, W) -> (B, C), accumulated and returned in `dtype`."""
    if torch.jit.is_scripting():  # TorchScript has no custom autograd functions (an FX graph may get scripted)
        return x.mean((2, 3), dtype=dtype)
    else:
        return _ChannelMean.apply(x, dtype)


@register_notrace_function
@torch.fx.wrap
def fuse_add(x: torch.Tensor, y: torch.Tensor, scores: Optional[torch.Tensor], start: int) -> torch.Tensor:
    """x with scores * y added to channels [start, start + y.shape[1]), returned as a new tensor; x is not changed.

    Run by PyTorch: a copy of x updated in its k fused channels (`_fused_copy`), with autograd through `_FuseAdd`.
    TorchScript has no custom autograd functions: slice, add, concatenate. (A graph recorded for another runtime
    gets a third form, see `MoDBlock.fuse`.)
    """
    if torch.jit.is_scripting():
        k = y.shape[1]
        dst = x.narrow(1, start, k)
        fused = dst + y if scores is None else torch.addcmul(dst, y, scores)
        return torch.cat([x[:, :start], fused, x[:, start + k:]], dim=1)
    if torch.is_grad_enabled():
        return _FuseAdd.apply(x, y, scores, start)
    return _fused_copy(x, y, scores, start)


@register_notrace_function  # draws from an RNG: FX keeps it as one call
@torch.fx.wrap
def random_channels(x: torch.Tensor, k: int, training: bool, seed: int) -> torch.Tensor:
    """k channel indices per sample drawn uniformly without replacement, (B, k).

    Training draws from torch's RNG (activation checkpointing restores its state, so a recompute draws the same
    channels). Eval is reproducible: the draw for sample b is a function of (seed, b) only, an integer hash of
    (seed, b, channel) made of plain tensor ops, so it compiles, exports and picks the same channels in every runtime.
    """
    B, C = x.shape[0], x.shape[1]
    if training:
        return torch.rand((B, C), device=x.device).topk(k, dim=1)[1]
    # Every intermediate stays below 2 ** 24, so it is exact even where a runtime computes integer tensors in float32
    # (OpenVINO's CPU plugin does): p is a prime below 2 ** 12 and keys are below p * C (C <= 4096).
    p = 4093
    sample = torch.arange(B, device=x.device)[:, None] % p
    channel = torch.arange(C, device=x.device)[None, :]
    h = (sample * 1423 % p + channel % p * 2731 % p + seed * 31 % p) % p
    for _ in range(3):  # squaring mod p mixes; an affine step alone would give evenly spaced keys
        h = (h * h + 7) % p
    return (h * C + (C - 1) - channel).topk(k, dim=1)[1]  # distinct keys: ties to the lower channel


@register_notrace_function  # its dtype choice is Python control flow: FX keeps the function as one call
@torch.fx.wrap
def selector_logits(x: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:
    """The channel selector's logits: pool over H x W, Linear(C, C // r), ReLU, Linear(C // r, C); (B, C).

    Computed in float32 (float64 for a float64 input), also in a half-precision model and under autocast: see
    `_ranking_dtype`.
    """
    dtype = _ranking_dtype(x.dtype)
    w1, w2 = w1.to(dtype), w2.to(dtype)
    if torch.jit.is_scripting():  # TorchScript compiles only this branch
        return F.linear(F.relu(F.linear(x.mean((2, 3), dtype=dtype), w1)), w2)
    else:
        if _recording_graph():
            # global average pool and 1x1 convolutions: the runtimes run these in their conv layout (ONNX Runtime
            # needs no reorder for them), where a Gemm / FullyConnected on a (B, C) matrix costs OpenVINO ~0.3 ms each
            s = F.adaptive_avg_pool2d(x.to(dtype), 1)
            return F.conv2d(F.relu(F.conv2d(s, w1[:, :, None, None])), w2[:, :, None, None]).squeeze(3).squeeze(2)
        s = x.mean((2, 3), dtype=dtype) if not torch.is_grad_enabled() else channel_mean(x, dtype)
        if torch.amp.is_autocast_available(x.device.type) and torch.is_autocast_enabled(x.device.type):
            with torch.autocast(x.device.type, enabled=False):  # autocast would run the linears in half precision
                return F.linear(F.relu(F.linear(s, w1)), w2)
        return F.linear(F.relu(F.linear(s, w1)), w2)


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
        check_reduction(reduction, channels)
        self.k = k
        hidden = max(1, channels // reduction)
        self.fc1 = nn.Linear(channels, hidden, bias=False, **dd)
        self.fc2 = nn.Linear(hidden, channels, bias=False, **dd)
        # integer, so that model.half() leaves it exact; not in the state dict
        self.register_buffer(
            'channel_index', torch.arange(channels, device=device, dtype=torch.int32), persistent=False)

    def init_non_persistent_buffers(self) -> None:
        """Fill the channel-index buffer (after building on the meta device, as timm does)."""
        if self.channel_index.device.type != 'meta':
            with torch.no_grad():
                self.channel_index.copy_(torch.arange(self.channel_index.numel()))

    def _apply(self, fn, *args, **kwargs):
        # The tie-break buffer is not in the state dict, so nothing restores it after `to_empty` (a model built on the
        # meta device, then materialised): every move of the module's tensors refills it.
        module = super()._apply(fn, *args, **kwargs)
        self.init_non_persistent_buffers()
        return module

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Channel logits before the sigmoid, (B, C), in float32 (float64 for a float64 input) whatever the model's
        precision or autocast says (see `_ranking_dtype`)."""
        return selector_logits(x, self.fc1.weight, self.fc2.weight)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Returns the selected scores and channel indices, both (B, k), in descending score order.

        Ranked by logit (the sigmoid is monotonic, and saturates to equal scores where the logits still differ), exact
        ties to the lower channel index; the sigmoid is taken of the k selected logits only.
        """
        # Exact ties between logits happen: when the hidden ReLU outputs only zeros, every logit is 0. torch.topk
        # breaks ties in no fixed order (and unlike ONNX Runtime and OpenVINO), so the ranking key is logit - 1e-30 *
        # channel: ties go to the lower channel index in every runtime. The step is far below the spacing of float32
        # numbers around any logit that is not zero (or within 1e-19 of it), so it reorders nothing else.
        key = torch.add(self.logits(x), self.channel_index, alpha=-1e-30)
        top, idx = key.topk(self.k, dim=1)
        return top.sigmoid(), idx


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
        if routing == 'topk':
            check_reduction(reduction, channels, name)
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
        """x + scores * y at the fusion's k channels, as a new tensor: x itself is never changed (see `fuse_add`)."""
        if self.fusion == 'original':
            update = y if scores is None else y * scores
            return x.clone().scatter_add_(1, _channel_index(x, idx), update)  # the clone keeps x's memory format
        start = 0 if self.fusion == 'first' else self.channels - self.k
        if _recording_graph():
            # ``x + conv1x1(scores * y, E)``, E the constant one-hot C x k placement: runtimes keep x in their blocked
            # convolution layout and fold the add into that convolution, where slicing x apart and concatenating it
            # again makes them convert the whole tensor to plain NCHW and back. One-hot products are exact.
            update = y if scores is None else y * scores
            return x + F.conv2d(update, _placement(self.channels, self.k, start, update))
        return fuse_add(x, y, scores, start)

    def feature_info(self, location: str) -> Dict[str, Any]:
        """Feature hook info for timm's EfficientNet feature extraction: a MoD block keeps its C channels."""
        return dict(module='', num_chs=self.channels)

    def extra_repr(self) -> str:
        return f'channels={self.channels}, k={self.k}, fusion={self.fusion}, routing={self.routing}'
