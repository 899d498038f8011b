"""What every configuration saved in a checkpoint shares.

A run's configuration (a model's shape, a trainer's settings) is a dataclass that subclasses
:class:`SavedConfig`, and is written into every checkpoint as a plain dict (``to_dict``) and read
back with ``from_dict``. ``from_dict`` keeps only the fields the class has, so a checkpoint from
a version with more or fewer settings still loads: unknown keys are dropped, and settings the
checkpoint lacks take their defaults.
"""
from dataclasses import asdict

__all__ = ["SavedConfig"]


class SavedConfig:
    """Mixin for dataclasses saved in checkpoints: ``to_dict`` and ``from_dict``."""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict):
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})
