"""Re-exports `trainer.layers.string_lookup`, the id -> lookup-index layer both stages share, for older imports."""

from __future__ import annotations

from trainer.layers import string_lookup

__all__ = ["string_lookup"]
