"""Errors of the build pipeline."""

from __future__ import annotations

from tokenloom import _core

class BuildInputError(_core.TokenloomError, ValueError):
    """A bad input record in strict mode, or an input that cannot be used at all."""


