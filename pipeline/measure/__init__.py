"""Measurements of a served variant, one module each (parity, divergence, evals, load), each with
its own content key; each picks its method from the engine's declared capabilities."""


class NotMeasurable(Exception):
    """This measurement cannot be taken here (no engine capability it can use, no reference to
    compare with, ...): a verdict with its reason, not a crash."""
