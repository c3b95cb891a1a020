"""Command-line tools, each run as ``python -m timm_mod.tools.<tool>`` (``--help`` explains every flag).

Launchers and the Hub:
    train       ./train.sh's presets around timm's own train.py (single process, torchrun, SLURM, resume)
    run         any of timm's scripts (validate.py, benchmark.py, onnx_export.py, ...) with the MoD models registered
    hub         export / publish weights as safetensors with config.json and a model card

Measurement and analysis:
    bench       speed against the paper's baselines and the bound, in eager, torch.compile, ONNX Runtime, OpenVINO
    matrix      several bench settings in one process, within a time budget (benchmarks/gpu_matrix.sh)
    blockbench  one MoD block against the standard block beside it, per stage: time and aten op counts
    parity      every fast path of the MoD block (eager, channels_last, AMP, compile, CUDA graphs) against the plain
                mechanism, on the CPU or a GPU
    breakdown   where a MoD model's time goes, block by block
    report      BENCHMARKS.md and Figure 3 from the bench's JSON rows
    table       the README's parameter and MAC table
    selection   Figure 4: how often each channel is selected

Shared by the tools (no command line):
    complexity  parameter and MAC counts (fvcore)
    paper       the paper's numbers, transcribed once

A tool imports the packages of its extra (pyproject.toml: tools, train, data, plot, deploy) where it uses them, and
names the pip install that provides one that is missing.
"""
