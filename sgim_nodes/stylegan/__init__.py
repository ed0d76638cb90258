"""StyleGAN2 and StyleGAN3 generators: pure-PyTorch networks and safe loaders for rosinality, NVlabs and our files.

    from sgim_nodes.stylegan import load_generator
    G = load_generator("ffhq.pkl", device="cuda")
    ws = G.mapping(z, truncation_psi=0.7)          # [B, num_ws, w_dim]
    img = G.synthesis(ws, noise_mode="const")      # [B, 3, H, W], about [-1, 1]
"""

from .loaders import GENERATOR_KIND, STYLEGAN3_KIND, load_generator, rosinality_checkpoint, save_generator
from .network import MODULATION_MODES, NOISE_MODES, Generator, GeneratorConfig, standard_channels
from .stylegan3 import StyleGAN3Config, StyleGAN3Generator
from .stylegan3_files import nvlabs_stylegan3_state

__all__ = ["Generator", "GeneratorConfig", "load_generator", "save_generator", "rosinality_checkpoint",
           "standard_channels", "GENERATOR_KIND", "MODULATION_MODES", "NOISE_MODES", "StyleGAN3Config",
           "StyleGAN3Generator", "STYLEGAN3_KIND", "nvlabs_stylegan3_state"]
