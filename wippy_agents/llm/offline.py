"""A model with no key and no network, deterministic, so an app runs (and calls tools) on a fresh machine.

An `offline` model entry loads as an `OfflineModel` (see `load_model`).
"""

from ._offline import OfflineModel

__all__ = ["OfflineModel"]
