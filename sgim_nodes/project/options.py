"""The choices and defaults of a projection, in one place (no torch here: ``project --help`` shows them)."""

DISTANCES = ("lpips", "pixel", "multiscale", "clip")
FIT_MODES = ("crop", "pad")
SPACES = ("w", "wplus")
TUNE_LR = 3e-4  # PTI's pti_learning_rate
VGG_FOLDER = "sgim_vgg"
VGG_FILENAME = "vgg16-397923af.pth"
