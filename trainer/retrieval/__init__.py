"""Candidate generation: the YouTube two-tower model (TFRS), its training, evaluation and export.

Entry points: `train.train_retrieval`, `export.export_retrieval`, `inference.retrieve`
(also importable as `trainer.retrieval.retrieve`), `servability.check_servable`. The feature ablations and
the TFRS tutorial protocol are benchmarks (`bench.ablation`, `bench.tutorial`).
"""

from trainer.retrieval.inference import retrieve

__all__ = ["retrieve"]
