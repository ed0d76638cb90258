"""Layer masks: presets for real and tiny generators, custom lists, validation, adaptive masking."""

from __future__ import annotations

import pytest
import torch

from sgim_nodes.errors import ParameterError
from sgim_nodes.optimize import LayerMask, parse_layer_list, preset_layers, resolve_layer_mask, similarity_terms
from sgim_nodes.optimize.layer_mask import adaptive_init, adaptive_update_



pytestmark = pytest.mark.usefixtures("one_torch_thread")

@pytest.mark.parametrize("num_ws, coarse, middle, fine", [
    (8, [0, 1, 2, 3], [4, 5, 6, 7], []),
    (14, [0, 1, 2, 3], [4, 5, 6, 7], list(range(8, 14))),
    (18, [0, 1, 2, 3], [4, 5, 6, 7], list(range(8, 18))),
])
def test_presets_split_by_resolution(num_ws, coarse, middle, fine):
    assert preset_layers("coarse", num_ws) == coarse
    assert preset_layers("middle", num_ws) == middle
    assert preset_layers("fine", num_ws) == fine
    assert preset_layers("all", num_ws) == list(range(num_ws))


def test_preset_freezes_or_weights_the_other_layers():
    mask = LayerMask.preset("middle", 14)
    assert mask.editable.tolist() == [4, 5, 6, 7]
    assert mask.frozen.sum().item() == 10
    soft = LayerMask.preset("coarse", 14, outside_weight=5.0)
    assert not soft.frozen.any()
    assert soft.weights.tolist() == [1.0] * 4 + [5.0] * 10
    with pytest.raises(ParameterError, match="selects no layer.*8 W\\+ layers"):
        LayerMask.preset("fine", 8)
    with pytest.raises(ParameterError, match="expected one of"):
        LayerMask.preset("ears", 14)


def test_custom_lists_and_parsing():
    mask = LayerMask.from_lists([1, 2, 3, 4, 5, 6, 7, 8], frozen=[0, 7])
    assert mask.frozen.tolist() == [True] + [False] * 6 + [True]
    assert mask.editable.tolist() == [1, 2, 3, 4, 5, 6]
    assert parse_layer_list("0-2, 5, 12-", 14) == [0, 1, 2, 5, 12, 13]
    with pytest.raises(ParameterError, match="outside 0..13"):
        parse_layer_list("3-20", 14)
    with pytest.raises(ParameterError, match="cannot read"):
        parse_layer_list("a", 14)
    with pytest.raises(ParameterError, match="frozen"):
        LayerMask.from_lists(frozen=list(range(4)), num_ws=4)  # nothing left to optimise
    with pytest.raises(ParameterError, match="finite and >= 0"):
        LayerMask.from_lists([1.0, float("nan")])


def test_resolve_checks_length_against_the_generator():
    assert resolve_layer_mask(None, 18).weights.tolist() == [1.0] * 18
    assert resolve_layer_mask("fine", 18).editable.tolist() == list(range(8, 18))
    assert resolve_layer_mask([0.5] * 14, 14).weights.tolist() == [0.5] * 14
    with pytest.raises(ParameterError, match="num_ws = 18"):
        resolve_layer_mask([1.0] * 14, 18)
    with pytest.raises(ParameterError, match="num_ws = 18"):
        resolve_layer_mask(LayerMask.uniform(14), 18)


def _reference_adaptive(ws_steps, source):
    """The released code's loop for one image: per layer, a sigmoid weight and a host-side update."""
    num_ws = source.shape[1]
    m = torch.ones(num_ws)
    losses = []
    for ws in ws_steps:
        similarity = 0
        for idx in range(num_ws):
            layer = torch.sigmoid(m[idx]) * ((source[:, idx, :] - ws[:, idx, :]) ** 2).sum()
            similarity = similarity + layer
            m[idx] = m[idx] - 0.1 * layer.item() * (1 - layer.item())
        losses.append(similarity)
    return torch.stack(losses), m


@pytest.mark.parametrize("num_ws", [8, 14, 18])
def test_adaptive_mask_matches_per_layer_loop(num_ws):
    torch.manual_seed(num_ws)
    batch, w_dim, steps = 3, 16, 6
    source = torch.randn(batch, num_ws, w_dim)
    # Moving codes with per-layer distances from ~0.01 to ~3, so l(1-l) takes both signs.
    scales = torch.linspace(0.02, 0.45, num_ws)[None, :, None]
    ws_steps = [(source + scales * (k + 1) / steps * torch.randn(batch, num_ws, w_dim)).requires_grad_()
                for k in range(steps)]

    logits = adaptive_init(batch, num_ws)
    ours = []
    for ws in ws_steps:
        terms = similarity_terms(ws, source, torch.ones(num_ws), logits)
        ours.append(terms.sum(-1))
        adaptive_update_(logits, terms)
    ours = torch.stack(ours)  # [steps, B]
    grads = torch.autograd.grad(ours.sum(), ws_steps)

    for b in range(batch):
        ref_ws = [ws[b:b + 1].detach().clone().requires_grad_() for ws in ws_steps]
        ref_losses, ref_m = _reference_adaptive(ref_ws, source[b:b + 1])
        ref_grads = torch.autograd.grad(ref_losses.sum(), ref_ws)
        torch.testing.assert_close(ours[:, b], ref_losses, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(logits[b], ref_m, rtol=1e-5, atol=1e-6)
        for g, rg in zip(grads, ref_grads):
            torch.testing.assert_close(g[b:b + 1], rg, rtol=1e-5, atol=1e-6)
    assert (logits - 1).abs().max() > 0.05  # the masks really moved
