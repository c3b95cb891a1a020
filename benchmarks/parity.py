"""Every fast path of the MoD block against the plain mechanism, on the CPU or a GPU.

The reference (`reference_forward`) is the paper's mechanism written the plain way, from the block's weights:
average pool, the two linear layers (in float32 at least, whatever the precision, as the block scores), top-k of the
logits (the same tie-break as the block), sigmoid of the k selected, `gather` of those channels, the k-channel block,
multiply by the scores, then concatenate (fusion first / last) or `scatter_add` (fusion original). The block's own
forward takes other routes: one `index_select` at batch 1, a channels_last gather, a fusion into a copy of the input
with its own backward (`_FuseAdd`), a pooling with its own backward (`_ChannelMean`), and whatever torch.compile and
CUDA graphs make of them.

Each check draws fresh random input and compares with the reference in float64 on the CPU, given the channels the
reference selects from the case's input (the fast path must select exactly those): relative error
||fast - ref|| / ||ref|| of the output and, in training, of the input's and the parameters' gradients (of a random
weighting of the output). A check passes when that error is at most the tolerance of the case's precision (float32
1e-4, float16 1e-2, bfloat16 3e-2) plus twice the error of the reference mechanism itself run in that precision: a
fast path must be as accurate as the plain mechanism. Parameter gradients are compared over the parameters whose
gradient the precision determines, those where the plain mechanism in it is within the tolerance (see
`check_block`). TF32 is off during the checks (and restored after), so float32 means float32.

Blocks checked: resnet50_mod's layer1.1 (a Bottleneck at k = 4, width 1) with fusions first, last and original, and
mobilenetv2_mod's blocks.1.1 (an InvertedResidual at k = 1), at their own channel counts on small feature maps.

Paths: eager inference (batch 1 and 3, NCHW and channels_last, float32 and AMP) and eager training (forward and
backward, the same layouts and precisions) for every block; torch.compile (inductor, fullgraph; AMP and channels_last,
as the benchmarks run) inference for resnet50_mod's layer1.1 (fusion first) and mobilenetv2_mod's blocks.1.1, and
training for the first of them; on CUDA, CUDA graphs (mode reduce-overhead) at batch 1 for the same two blocks.

Run from the repository root of a checkout (a development tool, not part of the package); it exits 1 when a check
fails. On two CPU cores the eager paths take about EAGER_S and the compiled ones about COMPILE_S more; on a GPU most of
the time is torch.compile's compiling.

Examples:
    python benchmarks/parity.py --no-compile                     # eager paths only, on the CPU
    python benchmarks/parity.py --device cuda --json parity.json # every path, CUDA graphs included
"""
import argparse
import copy
import json
import sys
from contextlib import contextmanager, nullcontext
from typing import Any, Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple

import timm
import torch
import torch.nn.functional as F

from timm_mod.layers import MoDBlock
from timm_mod.tools._cli import OutputError, check_device, new_file, positive_int

__all__ = ['Block', 'BLOCKS', 'Case', 'reference_route', 'reference_forward', 'check_block', 'check_parity',
           'default_cases', 'markdown']

# Relative-error tolerances: float32 (TF32 off), float16 autocast (CUDA), bfloat16 autocast (CPU).
TOLERANCES = {torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 3e-2}


class Block(NamedTuple):
    """A MoD block to check: model, block name, model kwargs, and the modes its compiled paths are checked in."""
    model: str
    name: str
    kwargs: Dict[str, Any]
    compiled: Tuple[str, ...]


# Every block goes through every eager path; compiling costs seconds per path, so fewer of those.
BLOCKS = (
    Block('resnet50_mod', 'layer1.1', {}, ('inference', 'train')),
    Block('resnet50_mod', 'layer1.1', {'mod_fusion': 'last'}, ()),
    Block('resnet50_mod', 'layer1.1', {'mod_fusion': 'original'}, ()),
    Block('mobilenetv2_mod', 'blocks.1.1', {}, ('inference',)),
)


class Case(NamedTuple):
    """One fast path: eager / compile / cudagraphs, inference / train, batch, layout, precision."""
    path: str
    mode: str
    batch_size: int
    channels_last: bool
    amp: bool


def default_cases(device: str, compile_paths: bool = True) -> List[Case]:
    """Every eager path in float32 and AMP; with `compile_paths`, torch.compile inference and training (AMP,
    channels_last, as the benchmarks run) and on CUDA CUDA graphs at batch 1 (inference)."""
    cases = [Case('eager', mode, bs, cl, amp)
             for mode in ('inference', 'train') for bs in (1, 3) for cl in (False, True) for amp in (False, True)]
    if compile_paths:
        cases += [Case('compile', 'inference', 3, True, True), Case('compile', 'train', 3, True, True)]
        if device == 'cuda':
            cases.append(Case('cudagraphs', 'inference', 1, True, True))
    return cases


def reference_route(block: MoDBlock, x: torch.Tensor,
                    idx: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """Scores (B, k) and channel indices (B, k) from the selector's weights: pool, MLP, rank, top-k, sigmoid.

    With `idx` given, the scores of those channels (the float64 reference takes the channels selected in the
    case's precision, which its own ranking may order differently where two logits are closer than that precision).
    """
    sel = block.selector
    # the block scores in float32 (float64 for float64) whatever the model's precision or autocast says, so that the
    # ranking does not change with the precision; ties go to the lower channel
    dtype = torch.promote_types(x.dtype, torch.float32)
    with torch.autocast(x.device.type, enabled=False):
        hidden = F.relu(F.linear(x.mean((2, 3), dtype=dtype), sel.fc1.weight.to(dtype)))
        logits = F.linear(hidden, sel.fc2.weight.to(dtype))
    key = torch.add(logits, sel.channel_index, alpha=-1e-30)
    if idx is None:
        idx = key.topk(block.k, dim=1)[1]
    return key.gather(1, idx).sigmoid(), idx


def reference_forward(block: MoDBlock, x: torch.Tensor, idx: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The MoD block's output, the plain way: gather, block, multiply, concatenate (first, last) or scatter_add."""
    scores, idx = reference_route(block, x, idx)
    index = idx[:, :, None, None].expand(-1, -1, x.shape[2], x.shape[3])
    y = block.block(x.gather(1, index)) * scores[:, :, None, None]
    k, C = block.k, x.shape[1]
    if block.fusion == 'first':
        return torch.cat([x[:, :k] + y, x[:, k:]], 1)
    if block.fusion == 'last':
        return torch.cat([x[:, :C - k], x[:, C - k:] + y], 1)
    return x.scatter_add(1, index, y.to(x.dtype))


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


@contextmanager
def _exact_float32() -> Iterator[None]:
    """TF32 off for the checks (CUDA convolutions and matmuls), restored after."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _autocast(device: torch.device, amp: bool):
    if not amp:
        return torch.autocast(device.type, enabled=False)
    return torch.autocast(device.type, dtype=torch.float16 if device.type == 'cuda' else torch.bfloat16)


def _fast_fn(block: MoDBlock, case: Case):
    """The block as the case runs it: eager, or compiled (fullgraph; reduce-overhead for cudagraphs)."""
    if case.path == 'eager':
        return block
    torch._dynamo.reset()
    return torch.compile(block, fullgraph=True, mode='reduce-overhead' if case.path == 'cudagraphs' else None)


def _run(fn, block: MoDBlock, x: torch.Tensor, case: Case, weight: torch.Tensor,
         record_idx: bool) -> Dict[str, Any]:
    """Output (and in training, gradients of (out * weight).sum()) of one call; the selected indices if asked."""
    seen = {}
    handle = None
    if record_idx:
        handle = block.selector.register_forward_hook(lambda m, args, out: seen.__setitem__('idx', out[1]))
    try:
        if case.mode == 'inference':
            with torch.inference_mode(), _autocast(x.device, case.amp):
                out = fn(x)
                if case.path == 'cudagraphs':  # warm-up, record, then the replay is what is checked
                    out = fn(x)
                    out = fn(x)
                out = out.clone()
            return dict(out=out, idx=seen.get('idx'))
        block.zero_grad(set_to_none=True)
        inp = x.detach().clone().requires_grad_()
        with _autocast(x.device, case.amp):
            out = fn(torch.relu(inp))  # a ReLU before the block, as in a network (its output must survive)
        (out.to(weight.dtype) * weight).sum().backward()
        grads = [p.grad.detach().clone() for p in block.parameters()]
        return dict(out=out.detach(), idx=seen.get('idx'), grad_input=inp.grad, grad_params=grads)
    finally:
        if handle is not None:
            handle.remove()


def check_block(block: MoDBlock, label: str, case: Case, device: torch.device, size: int = 8,
                seed: int = 0) -> List[Dict[str, Any]]:
    """Rows comparing one path of `block` with the reference on fresh random input (see the module docstring).

    Each quantity is compared with the reference in float64 on the CPU, given the channels selected in the case's
    precision. The fast path passes when its error is at most the tolerance plus twice the error of the reference
    mechanism itself in the case's precision. Some gradients are not determined by a 16-bit computation at all: a
    1x1 convolution from one channel into a training-mode batch norm (mobilenetv2_mod's k = 1 block) has a gradient
    of exactly zero, which float16 and bfloat16 return as rounding noise; the parameter check leaves out those whose
    reference in the case's precision is off by more than the tolerance, and names how many it kept.
    """
    block = copy.deepcopy(block).to(device).train(case.mode == 'train')
    if case.channels_last:
        block = block.to(memory_format=torch.channels_last)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(case.batch_size, block.channels, size, size, generator=gen)
    weight = torch.randn(x.shape, generator=gen)
    dtype = torch.float32
    if case.amp:
        dtype = torch.float16 if device.type == 'cuda' else torch.bfloat16
        x = x.to(dtype)  # in a network under autocast, the previous block's output is in that dtype
    exact_block = copy.deepcopy(block).to('cpu', torch.float64).to(memory_format=torch.contiguous_format)
    x_dev, weight_dev = x.to(device), weight.to(device)
    if case.channels_last:
        x_dev = x_dev.contiguous(memory_format=torch.channels_last)
    eager = case._replace(path='eager')
    state = {k: v.clone() for k, v in block.state_dict().items()}  # training updates the BN running stats
    with _exact_float32():
        with torch.no_grad(), _autocast(device, case.amp):  # the channels selected in the case's precision
            idx = reference_route(block, torch.relu(x_dev) if case.mode == 'train' else x_dev)[1]
        fast = _run(_fast_fn(block, case), block, x_dev, case, weight_dev, record_idx=case.path == 'eager')
        block.load_state_dict(state)
        same = _run(lambda t: reference_forward(block, t, idx), block, x_dev, eager, weight_dev, record_idx=False)
        exact = _run(lambda t: reference_forward(exact_block, t, idx.cpu()), exact_block, x.double(),
                     eager._replace(amp=False), weight.double(), record_idx=False)
    tol = TOLERANCES[dtype]
    rows = []
    base = dict(block=label, fusion=block.fusion, k=block.k, channels=block.channels, device=device.type,
                **case._asdict())
    for quantity in ('out', 'grad_input'):
        if quantity in fast:
            err, ref_err = _rel_err(fast[quantity], exact[quantity]), _rel_err(same[quantity], exact[quantity])
            rows.append(dict(base, quantity=quantity, rel_err=err, ref_err=ref_err, limit=tol + 2 * ref_err,
                             ok=bool(err <= tol + 2 * ref_err)))
    if 'grad_params' in fast:
        # parameters whose gradient the precision determines: where the plain mechanism in it is within tolerance
        kept = [i for i, (s, e) in enumerate(zip(same['grad_params'], exact['grad_params'])) if _rel_err(s, e) <= tol]
        flat = {name: torch.cat([r['grad_params'][i].flatten().double().cpu() for i in kept] or [torch.zeros(1)])
                for name, r in (('fast', fast), ('same', same), ('exact', exact))}
        err, ref_err = _rel_err(flat['fast'], flat['exact']), _rel_err(flat['same'], flat['exact'])
        rows.append(dict(base, quantity=f'grad_params ({len(kept)} of {len(exact["grad_params"])})', rel_err=err,
                         ref_err=ref_err, limit=tol + 2 * ref_err, ok=bool(kept and err <= tol + 2 * ref_err)))
    if fast.get('idx') is not None:
        mismatch = (fast['idx'] != idx).float().mean().item()
        rows.append(dict(base, quantity='indices', rel_err=mismatch, ref_err=0.0, limit=0.0, ok=mismatch == 0.0))
    return rows


def check_parity(
        device: str = 'cpu',
        cases: Optional[List[Case]] = None,
        blocks: Optional[Tuple[Block, ...]] = None,
        size: int = 8,
) -> List[Dict[str, Any]]:
    """Every case for every block (`BLOCKS`; compiled cases only in a block's `compiled` modes): one row per
    compared quantity, with `ok`."""
    dev = torch.device(device)
    cases = default_cases(dev.type) if cases is None else cases
    rows = []
    for spec in BLOCKS if blocks is None else blocks:
        torch.manual_seed(0)
        block = timm.create_model(spec.model, **spec.kwargs).get_submodule(spec.name)
        for i, case in enumerate(cases):
            if case.path == 'eager' or case.mode in spec.compiled:
                rows += check_block(block, f'{spec.model} {spec.name}', case, dev, size=size, seed=i)
    return rows


def markdown(rows: List[Dict[str, Any]]) -> str:
    lines = ['| block | fusion | k | path | mode | batch | channels_last | AMP | quantity | error | reference\'s error '
             '| limit | ok |',
             '|---|---|---|---|---|---|---|---|---|---|---|---|---|']
    for r in rows:
        lines.append(f'| {r["block"]} | {r["fusion"]} | {r["k"]} | {r["path"]} | {r["mode"]} | {r["batch_size"]} | '
                     f'{r["channels_last"]} | {r["amp"]} | {r["quantity"]} | {r["rel_err"]:.2e} | {r["ref_err"]:.2e} | '
                     f'{r["limit"]:.1e} | '
                     f'{"yes" if r["ok"] else "**NO**"} |')
    failed = [r for r in rows if not r['ok']]
    lines.append('')
    lines.append(f'{len(rows) - len(failed)} of {len(rows)} checks pass' + (
        '.' if not failed else f'; FAILED: {len(failed)}.'))
    return '\n'.join(lines)


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog='python benchmarks/parity.py', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--device', default='cpu', choices=('cpu', 'cuda'), help='where to check (default cpu)')
    parser.add_argument('--no-compile', action='store_true',
                        help='eager paths only (skips torch.compile and CUDA graphs, which compile each case)')
    parser.add_argument('--size', type=positive_int, default=8,
                        help='height and width of the test feature maps (default 8)')
    parser.add_argument('--json', metavar='FILE', help='write one row per check to FILE (a new file)')
    args = parser.parse_args(argv)
    check_device(parser, args.device)
    try:
        with new_file(args.json, '--json') if args.json else nullcontext() as f:
            rows = check_parity(args.device, default_cases(args.device, not args.no_compile), size=args.size)
            print(markdown(rows))
            if f is not None:
                json.dump(rows, f, indent=1)
    except OutputError as e:
        parser.error(str(e))
    # only after the rows are written: a failed check is a result, not a failed run
    if not all(r['ok'] for r in rows):
        print('parity: some fast paths do not match the reference', file=sys.stderr)
        sys.exit(1)


if __name__ == '__main__':
    main()
