"""Bring your own picture: project an image into a generator's W+, optionally tune the generator around it.

    from sgim_nodes.project import load_lpips, project_image
    lpips = load_lpips("models/sgim_vgg/vgg16-397923af.pth")
    result = project_image(G, PIL.Image.open("my_painting.jpg"), lpips=lpips, steps=1000, tune_steps=350)
    result.ws            # [1, num_ws, w_dim]: the source code for a sound edit
    result.generator     # the tuned copy to edit with (G itself is untouched)

:mod:`.image` states how pictures are fitted to the generator, :mod:`.distance` the distances on offer
and what each is good for, :mod:`.projector` the recipe.
"""

from .distance import DISTANCES, VGG_FILENAME, VGG_FOLDER, Distance, LPIPSVGG, load_lpips, load_vgg16_features
from .image import FIT_MODES, image_to_tensor, prepare_target
from .projector import (SPACES, ProjectResult, ProjectStep, has_noise_inputs, project_image, psnr, tune_generator,
                        with_noise_maps)

__all__ = ["project_image", "tune_generator", "ProjectResult", "ProjectStep", "prepare_target", "image_to_tensor",
           "load_lpips", "load_vgg16_features", "Distance", "LPIPSVGG", "psnr", "with_noise_maps",
           "has_noise_inputs", "DISTANCES", "FIT_MODES", "SPACES", "VGG_FILENAME", "VGG_FOLDER"]
