"""Selection scores from the final hidden states instead of the logits.

When the output layer is a plain linear map (logits ``L = H @ W.T``, no bias, no soft-cap, no
scale), the two UDS signals need only a ``d x d`` summary of ``W``:

* utility: ``||H W^T||_* = ||H R^T||_*`` for any ``R`` with ``R^T R = W^T W`` (both products
  have the Gram matrix ``H W^T W H^T``, hence the same singular values);
* sketch: ``C_t (H W^T) C_v = C_t H (W^T C_v)``, with ``W^T C_v`` of shape ``[d, r_v]``.

Both are computed once per head weight (:class:`HeadFactor`) and again only when the weight
changes (a trainable head), so the scoring forward can stop before the ``[B, L, V]`` logits.
:class:`ModelScorer` finds the body and the head of a transformers causal LM (also inside a
``peft`` model), checks that the head is plain, and falls back to the logits where it is not.
"""

from __future__ import annotations

from typing import Any, Protocol

from .select_scores import FastJL, _check_logits, _torch, nuclear_norm


class Scoring(Protocol):
    """What :class:`ModelScorer` asks of its selector (a :class:`~tokenloom.BatchSelector`)."""

    def scores(self, logits: Any, mask: Any | None = None) -> tuple[Any, Any]: ...

    def scores_hidden(
        self, hidden: Any, weight: Any, mask: Any | None = None
    ) -> tuple[Any, Any]: ...


PATHS = ("auto", "hidden", "logits")
# Relative agreement of H @ W.T with the model's logits required to trust the hidden path.
CHECK_RTOL = {"float32": 1e-3, "float64": 1e-6}
CHECK_RTOL_LOW = 2e-2  # bf16 / fp16 weights


def _key(weight: Any) -> tuple[Any, ...]:
    """What identifies a head weight's values. A frozen head (``requires_grad`` false, as
    under LoRA): its storage and in-place version. A trainable head also by a float64 sum of
    its values, read at every use: optimizers and checkpoint loads may write the values
    without moving the version counter, so the factor follows the head's updates."""
    torch = _torch()
    key: tuple[Any, ...] = (
        weight.data_ptr(),
        weight._version,
        tuple(weight.shape),
        weight.dtype,
        weight.device,
    )
    if weight.requires_grad:
        with torch.no_grad():
            key += (float(weight.detach().sum(dtype=torch.float64)),)
    return key


class HeadFactor:
    """``r`` (``[d, d]``, float64, ``r.T @ r == W.T @ W``) and ``w_cv = W.T @ C_v``
    (``[d, r_v]``, float32) of a head weight ``W`` of shape ``[V, d]``."""

    def __init__(self, weight: Any, sketch: FastJL) -> None:
        torch = _torch()
        if weight.dim() != 2 or weight.shape[0] != sketch.vocab:
            raise ValueError(
                f"the head weight has shape {tuple(weight.shape)}, the sketch was built for a "
                f"vocabulary of {sketch.vocab}: pass the output layer's [vocab, hidden] weight"
            )
        self.key = _key(weight)
        with torch.no_grad():
            w = weight.detach()
            gram = _gram(w)
            eig, vec = torch.linalg.eigh(gram)
            self.r = eig.clamp(min=0).sqrt()[:, None] * vec.T  # r.T @ r = vec diag(eig) vec.T
            _, c_v = sketch.matrices(w.device)
            self.w_cv = w.float().T @ c_v


def _gram(w: Any) -> Any:
    """``W.T @ W``: float32 products of 8,192-row blocks summed in float64 (no float64 copy of
    a 152k-row head, and float32 product speed)."""
    torch = _torch()
    d = w.shape[1]
    gram = torch.zeros(d, d, dtype=torch.float64, device=w.device)
    for part in torch.split(w, 8192):
        p = part.float()
        gram += (p.T @ p).double()
    return gram


def hidden_scores(
    hidden: Any, factor: HeadFactor, sketch: FastJL, mask: Any | None = None
) -> tuple[Any, Any]:
    """``(utility [B], sketches [B, D])`` of the logits ``hidden @ W.T`` from the hidden states
    ``[B, L, d]``, equal to ``nuclear_norm`` and ``sketch`` of the logits themselves."""
    torch = _torch()
    with torch.no_grad():
        x = _check_logits(hidden, mask).float()
        if x.shape[-1] != factor.r.shape[0]:
            raise ValueError(
                f"hidden states have width {x.shape[-1]} but the head takes {factor.r.shape[0]}"
            )
        utility = nuclear_norm(x.double() @ factor.r.T)
        c_t, _ = sketch.matrices(x.device)
        z = sketch.over_time(x @ factor.w_cv, c_t)
    return utility, z.reshape(x.shape[0], sketch.dim)


def _unwrap(model: Any) -> Any:
    """The transformers model inside a ``peft`` wrapper (LoRA layers stay injected)."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return inner


def plain_head(model: Any) -> tuple[Any, Any] | str:
    """``(body, head)`` of a causal LM whose logits are ``body(...) @ head.weight.T``, or the
    reason they are not (then the logits must be used)."""
    torch = _torch()
    m = _unwrap(model)
    get_head = getattr(m, "get_output_embeddings", None)
    head = get_head() if callable(get_head) else None
    prefix = getattr(m, "base_model_prefix", "")
    body = getattr(m, prefix, None) if prefix else None
    if head is None or body is None or body is m:
        return f"{type(m).__name__} has no separate body and output layer"
    if type(head) is not torch.nn.Linear:
        return (
            f"the output layer is a {type(head).__name__}, not a plain Linear (an adapter on "
            "the head, or a custom head)"
        )
    if head.bias is not None:
        return "the output layer has a bias"
    cfg = getattr(m, "config", None)
    for name in ("final_logit_softcapping", "logit_softcapping"):
        if getattr(cfg, name, None) is not None:
            return f"the model soft-caps its logits ({name})"
    for name in ("logit_scale", "logits_scaling", "output_multiplier_scale"):
        value = getattr(cfg, name, None)
        if value is not None and float(value) != 1.0:
            return f"the model scales its logits ({name}={value})"
    return body, head


class ModelScorer:
    """Utilities and sketches of candidate batches for a transformers causal LM.

    ``path="auto"`` scores from the hidden states when the head is plain (see
    :func:`plain_head`), after checking once, on the first batch (in eval mode, under a
    forked RNG), that ``H @ W.T`` equals the model's logits (1e-3 relative in float32);
    otherwise from the logits. ``"hidden"`` raises
    where the hidden path does not hold; ``"logits"`` always runs the full model.
    ``self.path`` is the path in use and ``self.reason`` why the logits are used, if they are.
    """

    def __init__(self, model: Any, selector: Scoring, path: str = "auto") -> None:
        if path not in PATHS:
            raise ValueError(f"path must be one of {', '.join(PATHS)}, got {path!r}")
        self.model, self.selector = model, selector
        self.reason = ""
        found = plain_head(model) if path != "logits" else "the logits path was asked for"
        if isinstance(found, str):
            if path == "hidden":
                raise ValueError(f"selection cannot score from hidden states: {found}")
            self.path, self.reason, self.body, self.head = "logits", found, None, None
        else:
            self.path = "hidden"
            self.body, self.head = found
        # "auto" checks the hidden path against the logits once, on the first batch
        self._checked = not (path == "auto" and self.path == "hidden")

    @property
    def weight(self) -> Any:
        """The output layer's weight ``[V, d]``, read at each use (loading a checkpoint may
        replace the parameter)."""
        assert self.head is not None
        return self.head.weight

    def hidden(self, input_ids: Any, attention_mask: Any | None = None) -> Any:
        """The final hidden states ``[B, L, d]`` (the body's forward, no output layer)."""
        assert self.body is not None
        out = self.body(input_ids=input_ids, attention_mask=attention_mask)
        return out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]

    def scores(
        self, input_ids: Any, attention_mask: Any | None = None, mask: Any | None = None
    ) -> tuple[Any, Any]:
        """``(utility, sketches)`` of a candidate batch; ``mask`` (default
        ``attention_mask``) marks the rows that count."""
        torch = _torch()
        mask = attention_mask if mask is None else mask
        with torch.no_grad():
            if not self._checked:
                self._check(input_ids, attention_mask)
            if self.path == "logits":
                logits = self.model(input_ids=input_ids, attention_mask=attention_mask).logits
                return self.selector.scores(logits, mask)
            h = self.hidden(input_ids, attention_mask)
            return self.selector.scores_hidden(h, self.weight, mask)

    def _check(self, input_ids: Any, attention_mask: Any | None) -> None:
        """Once: the hidden path must reproduce the model's own logits on real input."""
        torch = _torch()
        self._checked = True
        rows = slice(0, min(2, input_ids.shape[0]))
        ids = input_ids[rows]
        am = None if attention_mask is None else attention_mask[rows]
        # in eval mode (no dropout) and under a forked RNG: the check draws nothing from the
        # RNG the scoring and training passes use
        training = self.model.training
        devices = [ids.device] if ids.device.type == "cuda" else []
        try:
            self.model.eval()
            with (
                torch.random.fork_rng(devices=devices),
                torch.autocast(ids.device.type, enabled=False),
            ):
                want = self.model(input_ids=ids, attention_mask=am).logits.float()
                got = self.hidden(ids, am).float() @ self.weight.float().T
        finally:
            self.model.train(training)
        rtol = CHECK_RTOL.get(str(self.weight.dtype).removeprefix("torch."), CHECK_RTOL_LOW)
        err = float((got - want).abs().max()) / max(float(want.abs().max()), 1e-30)
        if err > rtol:
            self.path = "logits"
            self.reason = (
                f"hidden states times the output weight differ from the model's logits by "
                f"{err:.1e} (relative): the model transforms its logits"
            )
