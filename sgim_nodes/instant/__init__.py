"""Instant edits: StyleCLIP-style global StyleSpace directions, analysed once per generator and CLIP model.

- :mod:`.analysis` the per-channel CLIP directions (exact Jacobian by reverse mode, or finite differences);
- :mod:`.cache`    our safetensors cache keyed by generator file content and CLIP identity (resumable);
- :mod:`.edit`     a CLIP-space target -> the W+ direction its relevant style channels ask for (default),
                   or StyleCLIP's StyleSpace edit -> edited W+ code and styles;
- :mod:`.follow`   per-frame instant codes that follow a music video's windowed embeddings, smoothed;
- :mod:`.warm`     the optimiser's warm start: the best point along the instant direction (``--init instant``).

Typical use (live: build the editor once, then call ``editor.edit`` per update):

    directions, hit = cached_directions(G, clip, generator_file="ffhq.pkl")
    result = instant_edit(G, clip, directions, targets, source_ws, alpha=1, beta=0.1)
    G.synthesis(result.ws)          # or G.synthesis_styles(result.styles), the exact edit
"""

from ..lazy import lazy_exports

_EXPORTS = {
    "analysis": ["ANALYSIS_METHODS", "AnalysisSettings", "StyleDirections", "analyze_styles", "analysis_cost",
                 "sample_codes", "style_statistics"],
    "cache": ["cached_directions", "default_cache_path", "read_directions", "save_directions", "clip_identity",
              "generator_identity"],
    "edit": ["DEFAULT_ALPHA", "DEFAULT_BETA", "REFERENCES", "SPACES", "InstantEditor", "InstantResult", "instant_edit",
             "reference_embedding", "target_direction"],
    "follow": ["follow_codes", "instant_keyframes", "smooth_frames"],
    "warm": ["WARM_ALPHAS", "warm_start_codes"],
}
__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
