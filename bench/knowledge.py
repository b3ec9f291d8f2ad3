"""The knowledge engine's figures: composite units and dedup calibration, then the learner over rounds.

    python bench/knowledge.py units                       # tau and dedup threshold, with their numbers
    python bench/knowledge.py rounds --state-dir runs/kn --rounds 5   # runs configs/knowledge.toml if needed

``units`` writes the synthetic world's documents to a folder, ingests them (store/corpus.py), embeds
the chunks with all-MiniLM-L6-v2, prints the k-NN cosine distribution, the calibrated tau and the
number of composite units at it and at the paper's 0.8; then embeds labelled question pairs
(paraphrase.py) and prints precision / recall of the MiniLM-cosine dedup at the calibrated threshold
and at the paper's 0.7. ``rounds`` prints, per committed round, the closed-book eval accuracy (overall
and by hop count), the exam's size and accuracy, yield and the fates of the round's candidates.
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from zpd.configs.vocabulary import CALIBRATED_FATES

ROOT = Path(__file__).resolve().parents[1]


def cmd_units(args: argparse.Namespace) -> None:
    import numpy as np

    from zpd.configs.schema import KnowledgeConfig
    from zpd.loop.domains.knowledge import units
    from zpd.loop.domains.knowledge.paraphrase import labelled_pairs
    from zpd.loop.domains.knowledge.world import World
    from zpd.store.corpus import chunks, ingest
    from zpd.store.db import open_store
    from zpd.trainer.embed import load_embedder

    cfg = KnowledgeConfig()
    world = World(cfg.world_seed, cfg.num_people * args.scale, cfg.num_orgs * args.scale,
                  cfg.num_cities * args.scale, cfg.num_countries * args.scale)
    emb = load_embedder(cfg.embedder)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "corpus"
        folder.mkdir()
        for name, text in world.documents().items():
            (folder / name).write_text(text)
        db = open_store(Path(tmp) / "state.db")
        t0 = time.monotonic()
        report = ingest(db, folder)
        again = ingest(db, folder)
        rows = chunks(db)
        print(f"ingest: {report.as_dict()} in {time.monotonic() - t0:.2f} s; "
              f"re-ingest added {again.chunks_added}")
        t0 = time.monotonic()
        vecs = emb.encode([r["text"] for r in rows])
        sims, idx = units.neighbours(vecs, cfg.knn)
        print(f"embedded {len(rows)} chunks ({vecs.shape[1]} dims) + kNN k={cfg.knn} "
              f"in {time.monotonic() - t0:.1f} s")
    cal = units.calibrate_tau(sims, cfg.tau_quantile)
    print("k-NN cosine: " + ", ".join(f"{k} {v:.3f}" for k, v in cal.stats.items()))
    for q in (0.5, 0.75, cal.quantile):
        tau = float(np.quantile(sims.ravel(), q))
        found = units.composite_units(vecs, sims, idx, tau)
        label = "calibrated tau (config quantile)" if q == cal.quantile else "tau"
        print(f"{label} at q{q} = {tau:.3f}: {len(found)} composite units over "
              f"{len({i for u in found for i in u})} chunks")
    print(f"paper's tau = 0.800: {len(units.composite_units(vecs, sims, idx, 0.8))} composite units")
    pairs = labelled_pairs(world, args.pairs, random.Random(1))
    a = emb.encode([p[0] for p in pairs])
    b = emb.encode([p[1] for p in pairs])
    sims_p = (a * b).sum(axis=1)
    labels = np.array([p[2] for p in pairs])
    half = len(pairs) // 2  # calibrate on the first half, report on the held-out second half
    thr = units.calibrate_threshold(sims_p[:half], labels[:half])
    print(f"dedup pairs: {len(pairs)} ({int(labels.sum())} duplicates); "
          f"cosine dup mean {sims_p[labels == 1].mean():.3f}"
          f" (min {sims_p[labels == 1].min():.3f}), non-dup mean {sims_p[labels == 0].mean():.3f}"
          f" (max {sims_p[labels == 0].max():.3f})")
    for t in (0.85, 0.9, 0.93, 0.95, 0.97):
        p, r = units.precision_recall(sims_p, labels, t)
        print(f"  all pairs at {t:.2f}: precision {p:.3f}, recall {r:.3f}")
    for name, t in (("calibrated, best F0.5 on the first half", thr), ("paper 0.7", 0.7),
                    ("config default", cfg.dedup_threshold)):
        p, r = units.precision_recall(sims_p[half:], labels[half:], t)
        print(f"  threshold {t:.3f} ({name}): held-out precision {p:.3f}, recall {r:.3f}")


def cmd_rounds(args: argparse.Namespace) -> None:
    state = Path(args.state_dir)
    if not (state / "LATEST").exists() or int((state / "LATEST").read_text()) < args.rounds:
        t0 = time.monotonic()
        out = subprocess.run([sys.executable, "-m", "zpd.loop.cli", "start", "--config", str(args.config),
                              "--state-dir", str(state), "--rounds", str(args.rounds)])
        print(f"daemon exited {out.returncode} after {time.monotonic() - t0:.0f} s")
    db = sqlite3.connect(f"file:{state / 'state.db'}?mode=ro", uri=True)
    print("round  eval  by hops (1..)             exam n/acc   candidates  "
          "mastered zpd review exam  yield  train_s")
    for rid, acc, exam_acc, exam_n, cand, yld, timings in db.execute(
            "SELECT id, eval_accuracy, exam_accuracy, exam_items, num_candidates, yield_ratio,"
            " timings_json FROM rounds WHERE status = 'committed' ORDER BY id"):
        hops = db.execute(
            """SELECT t.difficulty, avg(m.correct) FROM measurements m JOIN tasks t ON t.id = m.task_id
               WHERE m.round = ? AND m.kind = 'eval' GROUP BY t.difficulty ORDER BY t.difficulty""",
            [rid]).fetchall()
        fates = dict(db.execute("SELECT fate, count(*) FROM tasks WHERE fate_round = ? AND round > 0 "
                                "GROUP BY fate", [rid]).fetchall())
        if yld is None and rid > 0:  # a store written before yield was recorded: the same formula
            calibrated = sum(fates.get(f, 0) for f in CALIBRATED_FATES)
            yld = (fates.get("zpd", 0) + fates.get("exam", 0)) / calibrated if calibrated else None
        train_s = json.loads(timings or "{}").get("train")
        print(f"{rid:>5}  {acc or 0:.3f}  {' '.join(f'{a:.2f}' for _, a in hops):<25} "
              f"{exam_n or 0:>4}/{exam_acc if exam_acc is not None else float('nan'):.2f}   {cand or 0:>10}  "
              f"{fates.get('mastered', 0):>8} {fates.get('zpd', 0):>3} {fates.get('review', 0):>6} "
              f"{fates.get('exam', 0):>4}"
              f"  {yld if yld is not None else float('nan'):.3f}  "
              f"{train_s if train_s is None else round(train_s)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("units")
    p.add_argument("--scale", type=int, default=1, help="multiply the world's population sizes")
    p.add_argument("--pairs", type=int, default=600)
    p = sub.add_parser("rounds")
    p.add_argument("--state-dir", required=True)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--config", default=str(ROOT / "configs" / "knowledge.toml"))
    args = parser.parse_args()
    {"units": cmd_units, "rounds": cmd_rounds}[args.cmd](args)


if __name__ == "__main__":
    main()
