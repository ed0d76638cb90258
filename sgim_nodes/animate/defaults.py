"""Default settings of a music video, in one place (no torch here: ``animate --help`` shows them)."""

DEFAULT_SMOOTHING = 0.1  # seconds of centred smoothing of the audio features
DEFAULT_KEYFRAME_SECONDS = 4.0  # time between keyframes
DEFAULT_STEPS = 100  # optimiser steps of the first keyframe
DEFAULT_KEYFRAME_STEPS = 30  # steps of each later keyframe (warm-started from the previous one)
DEFAULT_REACTIVITY = 0.5  # how far loud beats push the code away from the source, relative
DEFAULT_ROTATION_DEGREES = 4.0  # StyleGAN3: largest rotation
DEFAULT_TRANSLATION = 0.05  # StyleGAN3: largest shift (input coordinates)
DEFAULT_BATCH = 8  # frames decoded at once
