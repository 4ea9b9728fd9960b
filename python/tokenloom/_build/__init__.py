"""The build pipeline behind ``tokenloom.build``: input discovery and reading (``inputs``),
tokenizers (``tokenizer``), per-task part writing (``parts``), the Ray engine (``ray``) and
its errors (``errors``). Private: the public API is ``tokenloom.build``."""
