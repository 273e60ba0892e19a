"""lifelong: a continual-learning experiment runner."""

__version__ = "0.1.0"
