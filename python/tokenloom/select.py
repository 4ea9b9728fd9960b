"""Online batch selection (UDS, Zou et al. 2025, arXiv 2510.16882).

From each candidate batch keep the samples whose logits carry the most utility (the nuclear
norm of the ``[L, V]`` logits) plus ``alpha`` times their mean distance to a memory of the
sketches of recently kept samples. The tensor work (nuclear norm, FastJL sketch) runs in torch
on the logits' device; the memory, the rules and the top-k run in the Rust core.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from . import _core
from ._renamed import renamed_names
from .select_dist import active, gather_candidates, local_rows
from .select_head import _key
from .select_scores import FastJL, _check_logits, _torch, nuclear_norm

if TYPE_CHECKING:
    from .select_head import HeadFactor

RULES = tuple(_core.SELECT_RULES)


# Renamed: its rules include baselines that are not UDS.
RENAMED = {"UDSSelector": ("BatchSelector", "its rules include baselines that are not UDS")}


SCOPES = ("rank", "global")
STATE_VERSION = 1


class BatchSelector:
    """Keeps ``keep`` samples of each candidate batch by a selection rule: by default UDS's
    utility and diversity, or one of the baselines it is measured against.

    ``rule``: ``"uds"`` (the paper: nuclear norm + ``alpha`` x mean sketch distance to the
    memory), ``"uds-auto"`` (the same with the weight calibrated, label-free, from the two
    terms' spread within the first ``calibration`` candidate batches that meet a memory:
    ``alpha_eff = alpha * sd(utility) / sd(distance)``, then fixed; ``alpha`` is a ratio of
    spreads and transfers across vocabularies, lengths and models), ``"uds-scaled"`` (both
    terms z-scored with running statistics), ``"uds-greedy"`` (one at a time, the samples
    already kept from the batch counting as memory, so they also differ from each other),
    and two baselines that are not UDS: ``"random"`` (a uniform draw of ``keep``) and
    ``"max-loss"`` (the highest per-sample losses: pass them to :meth:`select_from`).
    ``alpha=None`` takes the rule's default (the reference's 2.5e-3 for ``uds`` and
    ``uds-greedy``, which transfers only at the reference's vocabulary, length and logit
    scale; 1 for ``uds-auto`` and ``uds-scaled``). ``sketch=(r_t, r_v)`` are the FastJL sizes
    (paper: 8 x 128); ``max_len`` the longest sequence the sketch covers. ``state_dict()``
    holds the memory, running statistics and step counter: resuming is exact.

    Under ``torch.distributed``, ``scope="rank"`` (default) selects within each rank's batch
    with a memory per rank. ``scope="global"`` all-gathers utilities and sketches (of
    ``group``, default: all ranks), selects ``keep`` samples from the global candidate batch
    (the ranks' rows in rank order) and returns to each rank its own kept rows, so ranks keep
    different numbers of rows; every rank holds the same memory. The selection is the same
    on any world size for the same global candidates. ``keep`` then counts over all ranks.
    """

    def __init__(
        self,
        keep: int,
        buffer_size: int = 1024,
        *,
        alpha: float | None = None,
        sketch: tuple[int, int] = (8, 128),
        seed: int = 0,
        rule: str = "uds",
        max_len: int = 512,
        scope: str = "rank",
        group: Any = None,
        calibration: int = _core.DEFAULT_CALIBRATION,
    ) -> None:
        if rule not in RULES:
            raise ValueError(f"rule must be one of {', '.join(RULES)}, got {rule!r}")
        if scope not in SCOPES:
            raise ValueError(f"scope must be one of {', '.join(SCOPES)}, got {scope!r}")
        self.scope, self.group = scope, group
        if keep < 1 or buffer_size < 0:
            raise ValueError("keep must be at least 1 and buffer_size at least 0")
        alpha = _core.default_alpha(rule) if alpha is None else alpha
        self.keep, self.buffer_size, self.alpha = int(keep), int(buffer_size), float(alpha)
        self.calibration = int(calibration)
        self.sketch_size = (int(sketch[0]), int(sketch[1]))
        self.seed, self.rule, self.max_len = int(seed), rule, int(max_len)
        self.dim = self.sketch_size[0] * self.sketch_size[1]
        self._sketch: FastJL | None = None
        self._factor: HeadFactor | None = None
        self._core = self._make_core(None)

    def _make_core(self, state: dict[str, Any] | None) -> _core.Selector:
        return _core.Selector(
            self.rule,
            self.keep,
            self.buffer_size,
            self.dim,
            self.alpha,
            self.seed,
            state,
            self.calibration,
        )

    def effective_alpha(self) -> float:
        """The diversity weight in use: ``alpha``, or for ``uds-auto`` the calibrated one
        (0 before the first calibration batch)."""
        return self._core.effective_alpha()

    def check_run(self, batches: int) -> None:
        """Raises ``ValueError`` if a run of ``batches`` candidate batches is too short to
        complete ``uds-auto``'s calibration window."""
        self._core.check_run(int(batches))

    def _sketcher(self, vocab: int) -> FastJL:
        if self._sketch is None or self._sketch.vocab != vocab:
            r_t, r_v = self.sketch_size
            self._sketch = FastJL(self.max_len, vocab, r_t, r_v, self.seed)
        return self._sketch

    def scores(self, logits: Any, mask: Any | None = None) -> tuple[Any, Any]:
        """``(utility [B], sketches [B, D])`` of a candidate batch's logits (no side effect)."""
        torch = _torch()
        with torch.no_grad():
            utility = nuclear_norm(logits, mask)
            sketches = self._sketcher(logits.shape[-1])(logits, mask)
        return utility, sketches

    def scores_hidden(self, hidden: Any, weight: Any, mask: Any | None = None) -> tuple[Any, Any]:
        """:meth:`scores` of the logits ``hidden @ weight.T`` from the final hidden states
        ``[B, L, d]`` and a plain output layer's weight ``[V, d]`` (no bias, no soft-cap),
        without forming the logits. The head's ``d x d`` factor is computed once and again
        only when the weight changes (a trainable head, after each optimizer step)."""
        from .select_head import HeadFactor, hidden_scores

        sketch = self._sketcher(weight.shape[0])
        if self._factor is None or self._factor.key != _key(weight):
            self._factor = HeadFactor(weight, sketch)
        return hidden_scores(hidden, self._factor, sketch, mask)

    def select_hidden(self, hidden: Any, weight: Any, mask: Any | None = None) -> Any:
        """:meth:`select` from the final hidden states and the output weight (see
        :meth:`scores_hidden`)."""
        torch = _torch()
        kept = self.select_from(*self.scores_hidden(hidden, weight, mask))
        return torch.from_numpy(kept).to(hidden.device)

    def select(self, logits: Any, mask: Any | None = None) -> Any:
        """Row indices (LongTensor on the logits' device, best first) of the kept samples."""
        torch = _torch()
        if self.rule == "max-loss":
            raise ValueError('rule "max-loss" ranks losses: call select_from(per_sample_losses)')
        if self.rule == "random":
            _check_logits(logits, mask)
            kept = self.select_from(np.zeros(logits.shape[0], dtype=np.float32))
        else:
            kept = self.select_from(*self.scores(logits, mask))
        return torch.from_numpy(kept).to(logits.device)

    def select_from(self, utility: Any, sketches: Any | None = None) -> np.ndarray:
        """Selection from precomputed per-sample utilities ``[B]`` and sketches ``[B, D]``
        (or per-sample losses for ``max-loss``): this rank's kept rows, best first."""
        if self.scope == "global" and active(self.group):
            u_all, z_all, offset, rows = gather_candidates(utility, sketches, self.dim, self.group)
            return local_rows(self._select(u_all, z_all), offset, rows)
        return self._select(utility, sketches)

    def _select(self, utility: Any, sketches: Any | None) -> np.ndarray:
        u = _as_numpy(utility).reshape(-1)
        z = np.zeros((0, self.dim), np.float32) if sketches is None else _as_numpy(sketches)
        if z.ndim != 2:
            raise ValueError(f"sketches must be [batch, {self.dim}], got shape {z.shape}")
        return self._core.select(u, z)

    def state_dict(self) -> dict[str, Any]:
        state = self._core.state()
        try:
            rows: Any = _torch().from_numpy(state["rows"])
        except ImportError:
            rows = state["rows"]
        return {
            "version": STATE_VERSION,
            "rule": self.rule,
            "keep": self.keep,
            "buffer_size": self.buffer_size,
            "sketch": self.sketch_size,
            "alpha": self.alpha,
            "seed": self.seed,
            "max_len": self.max_len,
            "rows": rows,
            "next": state["next"],
            "count": state["count"],
            "stats": [tuple(s) for s in state["stats"]],
            "steps": state["steps"],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("version") != STATE_VERSION:
            version = state.get("version")
            raise ValueError(f"selector state version {version!r} is not {STATE_VERSION}")
        mine = (self.buffer_size, self.sketch_size, self.max_len, self.seed)
        theirs = (state["buffer_size"], tuple(state["sketch"]), state["max_len"], state["seed"])
        if mine != theirs:
            raise ValueError(
                f"the state is of a selector with buffer_size, sketch, max_len, seed = {theirs}, "
                f"this one has {mine}; build the selector with the same settings"
            )
        core = dict(state)
        core["rows"] = _as_numpy(state["rows"]).reshape(-1)
        self._core = self._make_core(core)


def _as_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().to("cpu").float().numpy()
    return np.ascontiguousarray(np.asarray(x, dtype=np.float32))


__getattr__ = renamed_names(__name__, RENAMED, globals())
