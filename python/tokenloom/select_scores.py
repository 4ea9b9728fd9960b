"""The two UDS signals of a batch's logits, computed in torch on the logits' device: the
utility (nuclear norm of each sample's ``[L, V]`` logits) and the FastJL sketch the diversity
term compares. Used by :class:`~tokenloom.select.BatchSelector` on logits and by
:mod:`tokenloom.select_head` on hidden states.
"""

from __future__ import annotations

import math
from typing import Any


def _torch() -> Any:
    import torch

    return torch


def _check_logits(logits: Any, mask: Any | None) -> Any:
    """Validated logits with the masked (padding) rows zeroed."""
    torch = _torch()
    if not isinstance(logits, torch.Tensor) or logits.dim() != 3:
        shape = tuple(logits.shape) if hasattr(logits, "shape") else type(logits).__name__
        raise ValueError(f"logits must be a [batch, length, vocab] tensor, got {shape}")
    bad = ~torch.isfinite(logits).flatten(1).all(dim=1)
    if bool(bad.any()):
        rows = torch.nonzero(bad).flatten().tolist()
        raise ValueError(
            f"logits of samples {rows[:8]} hold NaN or infinity; check the model's numerics "
            "(e.g. fp16 overflow) before selecting"
        )
    if mask is None:
        return logits
    if tuple(mask.shape) != tuple(logits.shape[:2]):
        raise ValueError(
            f"mask has shape {tuple(mask.shape)} but the logits need {tuple(logits.shape[:2])} "
            "(batch, length)"
        )
    return logits * mask.to(device=logits.device, dtype=logits.dtype).unsqueeze(-1)


def nuclear_norm(logits: Any, mask: Any | None = None, method: str = "auto") -> Any:
    """Nuclear norm (sum of singular values) of each sample's ``[L, V]`` logits.

    ``mask`` (``[B, L]``, 1 for real tokens) zeroes padding rows, which leaves the norm of the
    real rows unchanged. ``method``: ``"svd"`` (``torch.linalg.svdvals``), ``"gram"`` (square
    roots of the eigenvalues of the ``L x L`` Gram matrix, in float64; much faster when
    ``L`` is much smaller than ``V``) or ``"auto"``. Returns a float32 ``[B]`` tensor.
    """
    torch = _torch()
    x = _check_logits(logits, mask)
    length, vocab = x.shape[1], x.shape[2]
    if method == "auto":
        method = "gram" if 4 * min(length, vocab) <= max(length, vocab) else "svd"
    if method == "svd":
        return torch.linalg.svdvals(x.float()).sum(dim=-1).float()
    if method == "gram":
        x = x.double()
        gram = x @ x.transpose(1, 2) if length <= vocab else x.transpose(1, 2) @ x
        eig = torch.linalg.eigvalsh(gram)
        return eig.clamp(min=0).sqrt().sum(dim=-1).float()
    raise ValueError(f'method must be "auto", "svd" or "gram", got {method!r}')


class FastJL:
    """The reference's FastJL sketch of ``[T, V]`` logits to ``r_t * r_v`` floats.

    Random signs over the vocabulary, an unnormalised FFT, ``r_v`` sampled columns (with
    replacement), scaled by ``sqrt(V / r_v)``; then the same over time with ``r_t`` rows. Only
    real parts are kept, as in the reference, so distances carry its scale and published
    ``alpha`` values transfer. Samples shorter than ``T`` are zero-padded at the end. The map
    is applied as its two dense cosine matrices (:meth:`dense`), which equal the FFT's real
    part at the sampled bins.
    """

    def __init__(self, max_len: int, vocab: int, r_t: int = 8, r_v: int = 128, seed: int = 0):
        torch = _torch()
        if min(max_len, vocab, r_t, r_v) < 1:
            raise ValueError("max_len, vocab and the sketch sizes must be at least 1")
        g = torch.Generator().manual_seed(int(seed))
        self.max_len, self.vocab, self.r_t, self.r_v = max_len, vocab, r_t, r_v
        self.s_v = torch.randint(0, 2, (vocab,), generator=g).float() * 2 - 1
        self.j_v = torch.randint(0, vocab, (r_v,), generator=g)
        self.s_t = torch.randint(0, 2, (max_len,), generator=g).float() * 2 - 1
        self.j_t = torch.randint(0, max_len, (r_t,), generator=g)
        self.c_v = math.sqrt(vocab / r_v)
        self.c_t = math.sqrt(max_len / r_t)
        self._dense: dict[str, tuple[Any, Any]] = {}

    @property
    def dim(self) -> int:
        return self.r_t * self.r_v

    def __call__(self, logits: Any, mask: Any | None = None) -> Any:
        """``[B, r_t * r_v]`` float32 sketches of ``[B, L, V]`` logits (``L <= max_len``).

        Computed as ``C_t @ X @ C_v`` with the dense matrices of :meth:`dense` (kept in float32
        on the logits' device): two products instead of a complex FFT over all ``V`` bins."""
        x = _check_logits(logits, mask).float()
        b, _, vocab = x.shape
        if vocab != self.vocab:
            raise ValueError(
                f"logits have {vocab} vocabulary columns, the sketch was built for {self.vocab}"
            )
        c_t, c_v = self.matrices(x.device)
        return self.over_time(x @ c_v, c_t).reshape(b, self.dim)

    def over_time(self, y: Any, c_t: Any) -> Any:
        """``C_t @ y`` for ``y`` of shape ``[B, L, r_v]`` (``L <= max_len``; the time axis is
        zero-padded at the end, which the first ``L`` columns of ``C_t`` express)."""
        length = y.shape[1]
        if length > self.max_len:
            raise ValueError(
                f"logits have {length} positions but the sketch covers max_len={self.max_len}; "
                "build the selector with a larger max_len"
            )
        return c_t[:, :length] @ y

    def matrices(self, device: Any) -> tuple[Any, Any]:
        """:meth:`dense` in float32 on ``device`` (computed once per device)."""
        key = str(device)
        if key not in self._dense:
            c_t, c_v = self.dense()
            self._dense[key] = (c_t.float().to(device), c_v.float().to(device))
        return self._dense[key]

    def dense(self) -> tuple[Any, Any]:
        """The same map as two matrices ``(C_t [r_t, T], C_v [V, r_v])``, scales included:
        ``sketch(X) = C_t @ X @ C_v``."""
        torch = _torch()
        v = torch.arange(self.vocab, dtype=torch.float64)
        t = torch.arange(self.max_len, dtype=torch.float64)
        c_v = self.s_v.double()[:, None] * torch.cos(
            2
            * math.pi
            * torch.remainder(v[:, None] * self.j_v.double()[None, :], self.vocab)
            / self.vocab
        )
        c_t = self.s_t.double()[None, :] * torch.cos(
            2
            * math.pi
            * torch.remainder(self.j_t.double()[:, None] * t[None, :], self.max_len)
            / self.max_len
        )
        return c_t * self.c_t, c_v * self.c_v
