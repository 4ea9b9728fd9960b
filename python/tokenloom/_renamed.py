"""Old public names kept for a release after a rename: each still resolves, with a
``DeprecationWarning`` saying the new name and why it changed."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable


def renamed_names(
    module: str, renamed: dict[str, tuple[str, str]], namespace: dict[str, Any]
) -> Callable[[str], Any]:
    """A module ``__getattr__`` resolving ``renamed[old] = (new, why)`` to ``namespace[new]``,
    with the warning; any other missing name raises ``AttributeError``."""

    def __getattr__(name: str) -> Any:
        if name not in renamed:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        new, why = renamed[name]
        warnings.warn(
            f"{module}.{name} is now {module}.{new} ({why})", DeprecationWarning, stacklevel=2
        )
        return namespace[new]

    return __getattr__
