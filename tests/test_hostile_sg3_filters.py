"""Hostile inputs: StyleGAN3 designs whose extreme cutoffs / stopbands (each within its own range) derived
NaN filter taps or scipy's raw ValueError in a randomly built generator are refused from the config, and
every config the limits accept builds finite filters and renders finite images."""

from __future__ import annotations

import itertools
import warnings

import pytest
import torch

from sgim_nodes.errors import ParameterError, SGIMError
from sgim_nodes.stylegan import StyleGAN3Config, StyleGAN3Generator
from sgim_nodes.stylegan.stylegan3 import design_layers, lowpass_filter

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _config(**changes) -> StyleGAN3Config:
    base = dict(resolution=16, z_dim=8, w_dim=8, channel_base=1 << 22, channel_max=8, num_layers=4, num_critical=1,
                margin_size=2)
    return StyleGAN3Config(**{**base, **changes})


@pytest.mark.parametrize("changes, parameter, expected", [
    # a transition band nine times the Nyquist rate: I0(beta ~ 900) overflows, every tap was NaN
    (dict(first_cutoff=1e-6, first_stopband=0.5, last_stopband_rel=10, filter_size=64, lrelu_upsampling=2),
     "first_stopband", "would be NaN"),
    (dict(first_cutoff=1e-6, first_stopband=0.5, last_stopband_rel=100.0, filter_size=64, lrelu_upsampling=2,
          use_radial_filters=True), "first_stopband", "would be NaN"),
    # a cutoff at or past half the sampling rate: scipy's raw "Invalid cutoff frequency"
    (dict(first_cutoff=1e-6, first_stopband=0.5, last_stopband_rel=0.5, filter_size=1, lrelu_upsampling=2),
     "first_cutoff", "derives a filter cutoff of"),
    (dict(first_cutoff=1e4, first_stopband=1e4, last_stopband_rel=1e2, filter_size=6), None, None),
])
def test_extreme_stopbands_refused_from_the_config(changes, parameter, expected):
    if parameter is None:  # refused by an earlier rule (channels, rates): still an SGIMError, never raw
        with pytest.raises(SGIMError):
            _config(**changes)
        return
    with pytest.raises(ParameterError, match=expected) as info:
        _config(**changes)
    assert info.value.parameter == parameter


def test_lowpass_filter_never_returns_nan():
    with pytest.raises(ParameterError, match="would be NaN"):
        lowpass_filter(128, 8.0, 144.0, 32.0)
    with pytest.raises(ParameterError, match="derives a filter cutoff"):
        lowpass_filter(12, 16.0, 2.0, 32.0)
    taps = lowpass_filter(12, 2.0, 4.0, 16.0)  # NVlabs-like: finite, unit gain
    assert torch.isfinite(taps).all() and abs(float(taps.sum()) - 1.0) < 1e-5


CUTOFFS = [1e-6, 1e-3, 0.5, 2.0, 64, 1e4]
STOPBANDS = [1e-6, 0.5, 2 ** 2.1, 64, 1e4]
RELATIVE = [1e-6, 0.5, 2 ** 0.3, 10, 1e2]


def test_every_accepted_extreme_design_builds_finite_filters():
    """A grid of extreme values over the cutoff, stopband, filter size, upsampling and radial filters: each
    config is refused with an SGIMError or designs finite taps for every layer."""
    accepted = refused = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for fc, fs, rel, size, radial, up in itertools.product(CUTOFFS, STOPBANDS, RELATIVE, [1, 64], [False, True],
                                                               [1, 2, 16]):
            try:
                config = _config(first_cutoff=fc, first_stopband=fs, last_stopband_rel=rel, filter_size=size,
                                 use_radial_filters=radial, lrelu_upsampling=up)
            except SGIMError:
                refused += 1
                continue
            accepted += 1
            for d in design_layers(config)[1]:
                for taps in (lowpass_filter(d.up_taps, d.in_cutoff, 2 * d.in_half_width, d.tmp_sampling_rate),
                             lowpass_filter(d.down_taps, d.out_cutoff, 2 * d.out_half_width, d.tmp_sampling_rate,
                                            d.down_radial)):
                    assert taps is None or bool(torch.isfinite(taps).all()), (fc, fs, rel, size, radial, up, d.name)
    assert accepted > 100 and refused > 100  # the grid reaches both sides of the rules


@pytest.mark.parametrize("changes", [
    dict(first_cutoff=1e-6, first_stopband=0.5, last_stopband_rel=0.5, filter_size=64, use_radial_filters=True,
         lrelu_upsampling=16),
    dict(first_cutoff=1e-6, first_stopband=2 ** 2.1, last_stopband_rel=2 ** 0.3, filter_size=64,
         use_radial_filters=True, lrelu_upsampling=2),
    dict(first_cutoff=2.0, first_stopband=2 ** 2.1, last_stopband_rel=2 ** 0.3, filter_size=6),  # NVlabs' own
])
def test_accepted_extreme_generators_render_finite_images(changes):
    config = _config(**changes)  # accepted by every rule
    torch.manual_seed(0)
    generator = StyleGAN3Generator(config).eval()
    with torch.no_grad():
        images = generator(torch.randn(2, 8))
    assert torch.isfinite(images).all()
