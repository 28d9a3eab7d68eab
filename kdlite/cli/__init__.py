"""kdlite's programs, one module each, all run as `python -m kdlite.cli.<name> key=value ...`
(`--help` lists a program's keys with their defaults). Library code never imports this package
(tests/test_structure.py); `train.py` and `evaluate.py` at the repository root are the two Hydra
programs.

- `bench`: the training step against a naive baseline (`kind=step`, appends to BENCHMARKS.md),
  or one step per LSP with random weights (`kind=lsp`, the compute profile of Figure 6);
- `report`: tables and figures from a sweep's run directories;
- `traces`: per-section token statistics (Table 2), answer position and reflection cues of a source;
- `cache_teacher`: the top-k teacher logit cache of a (teacher, data) cell;
- `export`: a pair's un-distilled student or its teacher as an HF folder;
- `probe`: the closing probe of a run or model folder;
- `sweep`: a grid's jobs before launching it (`action=list`), its runs' states after (`action=status`);
- `memory`: the per-GPU memory estimate of every study pair;
- `pretrain`: the shipped tiny base models and the tiny teacher's reasoning post-training;
- `gpu_check`: the one script to run on a CUDA machine.
"""
