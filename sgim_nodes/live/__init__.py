"""Live: the picture follows a microphone or a playing track in real time, in a web page.

- :mod:`.features` per-frame loudness, onset and band features computed causally (no look-ahead),
                   with the same analysis as ``animate``;
- :mod:`.session`  a session: the audio ring, the meaning direction of the last window (blended in),
                   band->layer reactivity, StyleGAN3 camera motion, frames at a target rate, recording;
- :mod:`.meaning`  the instant-edit directions of the sessions' meaning (cached, else analysed in the background);
- :mod:`.server`   the aiohttp application (page, websocket protocol, recordings);
- :mod:`.cli`      ``python -m sgim_nodes live``.
"""

from ..lazy import lazy_exports

_EXPORTS = {
    "features": ["CausalFeatures"],
    "session": ["LiveSession", "LiveSettings", "LiveFrame", "Meaning", "NoMeaning", "Recorder"],
    "meaning": ["InstantAnalysis", "InstantMeaning"],
    "server": ["LiveModels", "make_app", "add_live_routes"],
}
__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
