"""Measurements of a served variant, one module each (parity, divergence, evals, load), each with
its own content key; each picks its method from the engine's declared capabilities."""


class NotMeasurable(Exception):
    """The engine declares no capability this measurement can use (its reason says which)."""
