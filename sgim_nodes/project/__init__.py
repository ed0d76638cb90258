"""Bring your own picture: project an image into a generator's W+, optionally tune the generator around it.

    from sgim_nodes.project import load_lpips, project_image
    lpips = load_lpips("models/sgim_vgg/vgg16-397923af.pth")
    result = project_image(G, PIL.Image.open("my_painting.jpg"), lpips=lpips, steps=1000, tune_steps=350)
    result.ws            # [1, num_ws, w_dim]: the source code for a sound edit
    result.generator     # the tuned copy to edit with (G itself is untouched)

:mod:`.image` states how pictures are fitted to the generator, :mod:`.distance` the distances on offer
and what each is good for, :mod:`.projector` the recipe.
"""

# Names are imported from their modules on first use (PEP 562), so that ``project --help`` does not
# import torch.
from ..lazy import lazy_exports

_EXPORTS = {
    "options": ["DISTANCES", "FIT_MODES", "SPACES", "VGG_FILENAME", "VGG_FOLDER"],
    "distance": ["Distance", "LPIPSVGG", "load_lpips", "load_vgg16_features"],
    "image": ["image_to_tensor", "prepare_target"],
    "projector": ["ProjectResult", "ProjectStep", "has_noise_inputs", "project_image", "psnr", "tune_generator",
                  "with_noise_maps"],
}
__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
