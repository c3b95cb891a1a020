"""Command-line tools, each run as ``python -m timm_mod.tools.<tool>`` (``--help`` explains every flag).

Launchers, weights and deployment:
    train       ./train.sh's presets around timm's own train.py (single process, torchrun, SLURM, resume, start from
                a pretrained baseline)
    run         any of timm's scripts (validate.py, benchmark.py, onnx_export.py, ...) with the MoD models registered
    hub         export / publish weights as safetensors with config.json and a model card
    deploy      export a model to ONNX or OpenVINO, checked against PyTorch, or quantize it to INT8, compared
                with float32 on held-out images

Measurement and analysis:
    bench       speed against the paper's baselines and the bound, in eager, torch.compile, ONNX Runtime, OpenVINO
    report      the benchmarks page (docs/benchmarks.md) and Figure 3 from the bench's JSON rows
    breakdown   where a MoD model's time goes, block by block
    table       the README's parameter and MAC table
    selection   Figure 4: how often each channel is selected

Shared by the tools (no command line): `_cli` (argument types, checks, outputs that never overwrite, extras),
`complexity` (parameter and MAC counts, fvcore), `paper` (the paper's numbers, transcribed once), `sources` (timm's
dataset sources), `cards` (the Hub model cards). Development-only measurement (the block bench, the bench matrix,
the parity checker, the GPU scripts) lives in the repository's benchmarks/ folder, outside the package.

A tool imports the packages of its extra (pyproject.toml: tools, train, data, plot, deploy) where it uses them, and
names the pip install that provides one that is missing.
"""
import logging

# torch.utils.benchmark's import logs 'No CUDA runtime is found' on a CPU machine that has the CUDA toolkit: nothing a
# user of these tools can act on
logging.getLogger('torch.utils.cpp_extension').setLevel(logging.ERROR)
