"""The ``tokenloom`` console script: the same commands as the standalone binary, plus
``build``, which needs Python tokenizers and so runs here."""

from __future__ import annotations

import argparse
import sys

from tokenloom import _core


def _build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tokenloom build",
        description="Tokenize corpora (.jsonl[.gz|.zst], .parquet, .npy) into one dataset.",
    )
    p.add_argument("inputs", nargs="+", help="input files or glob patterns (quote them)")
    p.add_argument("-o", "--out", required=True, help="dataset directory to create")
    p.add_argument("-t", "--tokenizer", help="tokenizer.json of a Hugging Face tokenizer")
    p.add_argument("--text-field", default="text", help="JSON field / Parquet column of the text")
    p.add_argument("--token-field", help="JSON field / Parquet column of token ids instead")
    p.add_argument("--eos-id", type=int, help="end-of-document id (default: from the tokenizer)")
    p.add_argument("--vocab-size", type=int, help="vocabulary size (default: the tokenizer's)")
    p.add_argument("--no-eos", action="store_true", help="do not append an end-of-document id")
    p.add_argument("-j", "--workers", type=int, default=1, help="worker processes (default 1)")
    p.add_argument(
        "--engine",
        choices=("local", "ray"),
        default="local",
        help="local processes (default) or Ray tasks (joins RAY_ADDRESS, else starts Ray here)",
    )
    p.add_argument("--strict", action="store_true", help="stop at the first bad record")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary")
    return p


def build_main(argv: list[str]) -> int:
    """``tokenloom build ...``; returns the exit code (0 ok, 1 failed, 2 usage, 130 Ctrl-C)."""
    from tokenloom.build import build

    args = _build_parser().parse_args(argv)
    try:
        build(
            args.inputs,
            args.out,
            args.tokenizer,
            text_field=args.text_field,
            token_field=args.token_field,
            eos_id=args.eos_id,
            vocab_size=args.vocab_size,
            append_eos=not args.no_eos,
            workers=args.workers,
            engine=args.engine,
            strict=args.strict,
            progress=not args.quiet,
            overwrite=args.overwrite,
        )
    except KeyboardInterrupt:
        print(
            f"tokenloom build: interrupted; finished parts are kept in {args.out}/.parts, "
            "run the same command again to resume",
            file=sys.stderr,
        )
        return 130
    except (OSError, ValueError, TypeError, _core.TokenloomError) as e:
        print(f"tokenloom build: error: {e}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """Runs ``tokenloom`` with ``argv`` (default: ``sys.argv``) and returns its exit code."""
    args = list(sys.argv if argv is None else argv)
    args[0] = "tokenloom"
    # The global flag may come before the command: `tokenloom -q build ...`.
    flags = 1
    while flags < len(args) and args[flags] in ("-q", "--quiet"):
        flags += 1
    if flags < len(args) and args[flags] == "build":
        try:
            return build_main(args[flags + 1 :] + args[1:flags])
        except SystemExit as e:  # argparse: --help, usage errors
            return e.code if isinstance(e.code, int) else 2
    return _core.run_cli(args)


if __name__ == "__main__":
    sys.exit(main())
