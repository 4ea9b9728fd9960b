"""The ``tokenloom`` console script: the same commands as the standalone binary."""

from __future__ import annotations

import sys

from tokenloom import _core


def main(argv: list[str] | None = None) -> int:
    """Runs ``tokenloom`` with ``argv`` (default: ``sys.argv``) and returns its exit code."""
    args = list(sys.argv if argv is None else argv)
    args[0] = "tokenloom"
    return _core.run_cli(args)


if __name__ == "__main__":
    sys.exit(main())
