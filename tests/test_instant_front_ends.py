"""Instant edits, one code path: the Instant Edit node and ``edit --instant`` give the same codes."""

from __future__ import annotations

import torch

from sgim_nodes.__main__ import main as cli
from sgim_nodes.latents import load_wplus
from test_front_ends import model_path
from test_nodes import PACK_MODULE, comfy_base, fake_comfy, models, nodes, pack, run  # noqa: F401  (fixtures)


def test_instant_edit_node_and_command_line_give_the_same_codes(nodes, models, comfy_base, fake_comfy, tmp_path,
                                                                 monkeypatch):
    monkeypatch.setenv("SGIM_INSTANT_CACHE", str(tmp_path / "cache"))
    g = models.generator
    source, = run("SGIMSourceLatent", nodes, generator=g, seed=7, truncation_psi=0.7, mode="random", batch_size=1)
    rain, = run("SGIMEmbedText", nodes, clip=models.clip, text="a rainy night")
    node, report = run("SGIMInstantEdit", nodes, generator=g, clip=models.clip, target=rain, source=source,
                       alpha=1.0, beta=0.1, reference="source", space="wplus")
    assert '"cache_hit": false' in report
    out = tmp_path / "instant.png"
    assert cli(["edit", "--text", "a rainy night", "--seed", "7", "--instant", "--alpha", "1", "--beta", "0.1",
                "--generator", model_path(comfy_base, "stylegan", "generator"),
                "--clip", model_path(comfy_base, "sgim_clip", "clip"), "--device", "cpu", "--out", str(out)]) == 0
    ws, _, source_ws = load_wplus(tmp_path / "instant_wplus.safetensors")
    assert torch.equal(source_ws, source["ws"])
    torch.testing.assert_close(ws, node["ws"], atol=1e-6, rtol=1e-6)
    assert len(list((tmp_path / "cache").iterdir())) == 1  # one analysis, shared by both front ends
