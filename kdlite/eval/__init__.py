"""Evaluation: benchmarks -> prompts -> resumable generations -> math-verify grading -> avg@n / pass@k.

`kdlite.eval.run.evaluate(cfg)` is the entry point behind `evaluate.py`; the other modules are the
nouns it composes (`benchmarks`, `models`, `store`, `generate`, `grade`, `metrics`).
"""
