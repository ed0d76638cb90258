"""StyleSpace: the style vectors ``s`` that modulate every layer, for every generator family.

Each modulated layer (StyleGAN2 conv and ToRGB; StyleGAN3 synthesis layers, ToRGB and the Fourier
input's transform) computes its style vector with an affine map of one W+ row, ``s_l = A_l w_r + b_l``,
and the rest of the network reads only these vectors. So a list of style vectors determines the
image, and edits that move single channels of ``s`` (StyleSpace edits) are finer than W+ edits.

    styles = G.styles(ws)                  # list of [B, C_l], in the order the layers run
    img = G.synthesis_styles(styles)       # == G.synthesis(ws)
    table = style_table(G)                 # one StyleLayer per entry: name, kind, W+ row, channels, offset
    flat = flatten_styles(styles)          # [B, sum C_l]; flat channel j belongs to table's layer at offset

:func:`ws_from_styles` maps a style edit back to the W+ code nearest to it (least squares per W+ row,
over the layers that row drives), for the parts of the pack that take W+ codes only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import ParameterError

STYLE_KINDS = ("conv", "torgb", "input")


@dataclass(frozen=True)
class StyleLayer:
    """One modulated layer in StyleSpace: ``name`` (``conv3``, ``torgb1``, ``L4``, ``input``), ``kind``
    (one of :data:`STYLE_KINDS`), the W+ ``row`` its affine map reads, its number of ``channels`` and
    the ``offset`` of its first channel in the flat style vector."""

    name: str
    kind: str
    row: int
    channels: int
    offset: int

    @property
    def stop(self) -> int:
        return self.offset + self.channels


def style_table(generator) -> list[StyleLayer]:
    """The generator's style layers in StyleSpace order (the order :meth:`styles` returns them)."""
    table, offset = [], 0
    for name, layer, row, kind in _modules(generator):
        channels = int(layer.affine_bias.numel())
        table.append(StyleLayer(name, kind, row, channels, offset))
        offset += channels
    return table


def channel_index(generator) -> torch.Tensor:
    """[num_channels, 3] int64: (layer index in :func:`style_table`, W+ row, channel within the layer)
    of every flat style channel."""
    rows = []
    for index, layer in enumerate(style_table(generator)):
        channel = torch.arange(layer.channels)
        rows.append(torch.stack([torch.full_like(channel, index), torch.full_like(channel, layer.row), channel], 1))
    return torch.cat(rows)


def _modules(generator):
    synthesis = generator.synthesis_network
    return synthesis.style_modules()


def styles_from_ws(generator, ws: torch.Tensor) -> list[torch.Tensor]:
    if ws.ndim != 3 or ws.shape[1] != generator.num_ws or ws.shape[2] != generator.w_dim:
        raise ParameterError(f"ws: expected shape [batch, {generator.num_ws}, {generator.w_dim}], got "
                             f"{list(ws.shape)}", parameter="ws")
    return generator.synthesis_network.styles_from_ws(ws.to(generator.device, generator.dtype))


def check_styles(generator, styles) -> list[torch.Tensor]:
    """``styles`` (a list as :meth:`styles` gives, or one flat [B, num_channels] tensor) as a list of
    [B, C_l] tensors on the generator's device and dtype; shapes and finiteness checked."""
    table = style_table(generator)
    if isinstance(styles, torch.Tensor):
        styles = unflatten_styles(styles, table)
    if not isinstance(styles, (list, tuple)) or len(styles) != len(table):
        count = len(styles) if isinstance(styles, (list, tuple)) else type(styles).__name__
        raise ParameterError(f"styles: expected {len(table)} style vectors (one per modulated layer of "
                             f"'{generator.name}'), got {count}", parameter="styles")
    batch = styles[0].shape[0] if isinstance(styles[0], torch.Tensor) and styles[0].ndim == 2 else None
    out = []
    for layer, s in zip(table, styles):
        if not isinstance(s, torch.Tensor) or s.ndim != 2 or s.shape != (batch, layer.channels):
            shape = list(s.shape) if isinstance(s, torch.Tensor) else type(s).__name__
            raise ParameterError(f"styles: layer {layer.name} expects [{batch}, {layer.channels}], got {shape}",
                                 parameter="styles")
        if not torch.isfinite(s).all():
            raise ParameterError(f"styles: layer {layer.name} contains NaN or infinite values", parameter="styles")
        out.append(s.to(generator.device, generator.dtype))
    return out


def flatten_styles(styles: list[torch.Tensor]) -> torch.Tensor:
    """A list of [B, C_l] style vectors as one [B, sum C_l] tensor."""
    return torch.cat(list(styles), dim=1)


def unflatten_styles(flat: torch.Tensor, table: list[StyleLayer]) -> list[torch.Tensor]:
    """One flat [B, num_channels] style tensor as the list of per-layer views."""
    total = table[-1].stop
    if flat.ndim != 2 or flat.shape[1] != total:
        raise ParameterError(f"styles: expected a flat tensor [batch, {total}], got {list(flat.shape)}",
                             parameter="styles")
    return [flat[:, layer.offset:layer.stop] for layer in table]


def affine_maps(generator) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(A [C_l, w_dim], b [C_l]) of every style layer, float64: ``s_l = A w + b`` (read off the layer's own
    affine function, so each family's gains are included)."""
    out = []
    w_dim = generator.w_dim
    with torch.no_grad():
        for _, layer, _, _ in _modules(generator):
            probe = torch.cat([torch.zeros(1, w_dim), torch.eye(w_dim)]).to(generator.device, generator.dtype)
            s = layer.affine(probe).double()
            out.append(((s[1:] - s[:1]).t().contiguous(), s[0]))
    return out


def ws_from_styles(generator, styles, source_ws: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The W+ code whose styles are nearest (least squares) to ``styles``, starting from ``source_ws``:
    per W+ row, ``dw = argmin sum_l ||A_l dw - (s_l - s_l(source))||^2`` over the layers the row drives
    (minimum norm where that is underdetermined). Rows whose styles did not change stay bit-identical.

    Returns (ws [B, num_ws, w_dim], relative residual [B]: ||style change not reached|| / ||style change||,
    0 where a row's affine maps can reach every change, e.g. StyleGAN3 layers of at most w_dim channels).
    """
    styles = check_styles(generator, styles)
    table = style_table(generator)
    source = styles_from_ws(generator, source_ws)
    if source[0].shape[0] != styles[0].shape[0]:
        raise ParameterError(f"source_ws: batch {source[0].shape[0]} does not match the styles' batch "
                             f"{styles[0].shape[0]}", parameter="source_ws")
    maps = affine_maps(generator)
    ws = source_ws.detach().clone().to(generator.device, torch.float32)
    missed = torch.zeros(ws.shape[0], dtype=torch.float64, device=ws.device)
    wanted = torch.zeros_like(missed)
    for row in range(generator.num_ws):
        layers = [i for i, layer in enumerate(table) if layer.row == row]
        deltas = [(styles[i].double() - source[i].double()) for i in layers]
        if not layers or all(bool((d == 0).all()) for d in deltas):
            continue
        a = torch.cat([maps[i][0] for i in layers])  # [sum C, w_dim]
        target = torch.cat(deltas, dim=1)  # [B, sum C]
        dw = torch.linalg.lstsq(a.cpu(), target.t().cpu(), driver="gelsd").solution.t().to(ws.device)
        ws[:, row] = (ws[:, row].double() + dw).float()
        missed += (target - dw @ a.t()).square().sum(1)
        wanted += target.square().sum(1)
    residual = torch.where(wanted > 0, (missed / wanted.clamp_min(1e-300)).sqrt(), torch.zeros_like(wanted))
    return ws, residual.float()
