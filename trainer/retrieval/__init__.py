"""Candidate generation: the YouTube two-tower model (TFRS), its training, evaluation and export.

Entry points: `train.train_retrieval`, `export.export_retrieval`, `inference.retrieve`
(also importable as `trainer.retrieval.retrieve`), `ablation.run_ablations`,
`tutorial.run_tutorial_protocol`, `servability.check_servable`.
"""

from trainer.retrieval.inference import retrieve

__all__ = ["retrieve"]
