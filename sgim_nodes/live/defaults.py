"""Default settings of a live session, in one place (no torch here: ``live --help`` shows them)."""

DEFAULT_FPS = 15.0  # frames per second aimed at; late frames are dropped, never queued
DEFAULT_SIZE = 256  # pixels of the frames sent to the page (longer side)
DEFAULT_REACTIVITY = 1.0  # how far loud moments push the code away from the average image, relative
DEFAULT_ALPHA = 1.0  # strength of the meaning direction (the sound's CLIP target)
DEFAULT_PROMPT_WEIGHT = 0.3  # weight of the prompt against the sound in the target
DEFAULT_EMBED_EVERY = 0.75  # seconds of stream between two embeddings of the last window
DEFAULT_BETA = 0.1  # instant edits' disentanglement threshold: channels less relevant than this stay put
DEFAULT_UPDATE_DELAY = 0.5  # an update made from the window ending at t is applied at t + this (worked out meanwhile)
DEFAULT_BLEND_SECONDS = 1.0  # a new direction replaces the old one over this long (smoothstep)
DEFAULT_RELEASE = 0.1  # seconds over which a feature falls back after a peak (the rise is immediate)
DEFAULT_PORT = 8765
MAX_MESSAGE_BYTES = 1 << 20  # one websocket message from the page (about 5 s of 48 kHz float32 audio)
MAX_SESSIONS = 1  # sessions at once: one renderer per machine is what a CPU or one GPU sustains
