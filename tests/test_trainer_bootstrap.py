"""The bootstrap curriculum: sizes, the solo/guided split and determinism."""

from __future__ import annotations

from zpd.configs.schema import BootstrapConfig, ZpdConfig
from zpd.loop.domains.base import build_domains
from zpd.trainer.bootstrap import bootstrap_examples


def test_bootstrap_mixes_easy_bare_and_guided_examples() -> None:
    domain = build_domains(ZpdConfig().domains)["arithmetic"]
    cfg = BootstrapConfig(num_examples=400, max_solo_difficulty=1.0, max_guided_difficulty=4.0)
    examples = bootstrap_examples(domain, cfg, seed=5)
    assert len(examples) == 400
    assert examples == bootstrap_examples(domain, cfg, seed=5)
    bare = [e for e in examples if "|" not in e.prompt]
    guided = [e for e in examples if "|" in e.prompt]
    assert 50 < len(bare) < 150 and len(bare) + len(guided) == 400
    assert all(len(e.prompt.split("+")[0]) == 1 for e in bare)
    assert max(len(e.prompt.split("+")[0]) for e in guided) == 4
    assert all(str(eval(e.prompt.split("|")[0])) == e.response for e in examples)
