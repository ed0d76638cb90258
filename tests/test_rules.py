"""One rulebook: the same words mean the same thing in the nodes and on the command line.

The same inputs go through `edit` and through the node functions (Embed Text, Mix Embeddings, Layer
Mask, Optimize Latent, as ComfyUI calls them) and must give the same W+ codes.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from sgim_nodes.__main__ import main as cli
from sgim_nodes.errors import ParameterError
from sgim_nodes.latents import load_wplus, save_wplus
from sgim_nodes.optimize.rules import (check_source_options, freedom_mask, normalize_target_weights, parse_freedom,
                                       preset_freedom)
from test_nodes import comfy_base, fake_comfy, models, nodes, pack, run  # noqa: F401  (fixtures)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FREEDOM = [1.0, 1.0, 0.5, 0.0, 0.0, 1.0, 0.25, 1.0]  # 8 W+ layers: free, held back, frozen


def _cli_codes(comfy_base, tmp_path: Path, source: torch.Tensor, *extra: str) -> torch.Tensor:
    base, names = comfy_base
    latent = tmp_path / "source_wplus.safetensors"
    save_wplus(latent, source, "tiny_rosinality")
    out = tmp_path / "cli.png"
    assert cli(["edit", "--generator", str(base / "models" / "stylegan" / names["generator"]),
                "--clip", str(base / "models" / "sgim_clip" / names["clip"]), "--source-latent", str(latent),
                "--steps", "4", "--lr", "0.1", "--lambda-sim", "0.5", "--device", "cpu", "--out", str(out),
                *extra]) == 0
    return load_wplus(tmp_path / "cli_wplus.safetensors")[0]


def _node_codes(nodes, models, source: dict, target, layer_mask=None) -> torch.Tensor:
    wplus, _ = run("SGIMOptimizeLatent", nodes, generator=models.generator, clip=models.clip, target=target,
                   source=source, steps=4, lr=0.1, lambda_sim=0.5, lambda_id=0.0, adaptive_mask=False,
                   preview_every=0, layer_mask=layer_mask)
    return wplus["ws"]


def test_weights_and_layer_freedom_mean_the_same_in_nodes_and_command_line(nodes, models, comfy_base, fake_comfy,
                                                                           tmp_path):
    g = models.generator
    source, = run("SGIMSourceLatent", nodes, generator=g, seed=7, truncation_psi=0.7, mode="random", batch_size=1)
    rain, = run("SGIMEmbedText", nodes, clip=models.clip, text="a rainy night")
    sun, = run("SGIMEmbedText", nodes, clip=models.clip, text="a sunny day")
    mixed, = run("SGIMMixEmbeddings", nodes, embedding_a=rain, weight_a=2.0, embedding_b=sun, weight_b=2.0)
    mask, = run("SGIMLayerMask", nodes, generator=g, preset="custom", weights=json.dumps(FREEDOM))
    node_ws = _node_codes(nodes, models, source, mixed, mask)
    cli_ws = _cli_codes(comfy_base, tmp_path, source["ws"], "--text", "a rainy night", "--text", "a sunny day",
                        "--weights", "2,2", "--mask", ",".join(map(str, FREEDOM)))
    torch.testing.assert_close(cli_ws, node_ws, rtol=1e-5, atol=1e-6)
    assert torch.equal(cli_ws[0, 3:5], source["ws"][0, 3:5])  # freedom 0: frozen in both
    assert not torch.equal(cli_ws[0, 2], source["ws"][0, 2])  # freedom 0.5: held back, still free

    # relative weights: 1,1 is the same edit as 2,2 (a sum of weights does not rescale the CLIP term)
    same = _cli_codes(comfy_base, tmp_path, source["ws"], "--text", "a rainy night", "--text", "a sunny day",
                      "--weights", "1,1", "--mask", ",".join(map(str, FREEDOM)))
    torch.testing.assert_close(same, cli_ws, rtol=1e-6, atol=1e-7)


def test_layer_presets_mean_the_same_in_nodes_and_command_line(nodes, models, comfy_base, fake_comfy, tmp_path):
    g = models.generator
    source, = run("SGIMSourceLatent", nodes, generator=g, seed=3, truncation_psi=0.7, mode="random", batch_size=1)
    text, = run("SGIMEmbedText", nodes, clip=models.clip, text="fire")
    coarse, = run("SGIMLayerMask", nodes, generator=g, preset="coarse", weights="")
    node_ws = _node_codes(nodes, models, source, text, coarse)
    cli_ws = _cli_codes(comfy_base, tmp_path, source["ws"], "--text", "fire", "--mask", "coarse")
    torch.testing.assert_close(cli_ws, node_ws, rtol=1e-5, atol=1e-6)
    assert torch.equal(cli_ws[0, 4:], source["ws"][0, 4:])  # only the coarse rows 0-3 moved


def test_rulebook_values():
    assert preset_freedom("coarse", 8) == parse_freedom("coarse", 8) == [1.0] * 4 + [0.0] * 4
    mask = freedom_mask([1.0, 0.5, 0.0, 0.25])
    assert mask.weights.tolist() == [1.0, 2.0, 0.0, 4.0] and mask.frozen.tolist() == [False, False, True, False]
    assert normalize_target_weights([2.0, 2.0]).tolist() == [0.5, 0.5]
    assert normalize_target_weights([[1.0, 3.0]]).tolist() == [[0.25, 0.75]]
    for bad in ([0.0, 0.0], [1.0, float("nan")], [-1.0, 2.0]):
        with pytest.raises(ParameterError, match="target_weights"):
            normalize_target_weights(bad)
    with pytest.raises(ParameterError, match="mask: expected a preset"):
        parse_freedom("1,x", 8)
    with pytest.raises(ParameterError, match=r"\[0, 1\]"):
        parse_freedom("1,1,1,1,1,1,1,2", 8)
    check_source_options("edit", batch=4, seed_given=True)  # random sources: both mean something
    with pytest.raises(ParameterError) as info:
        check_source_options("edit", batch=2, source_given=True)
    assert info.value.parameter == "batch"
