"""StyleGAN2 generator: one pure-PyTorch network and safe loaders for rosinality, NVlabs and our files.

    from sgim_nodes.stylegan import load_generator
    G = load_generator("ffhq.pkl", device="cuda")
    ws = G.mapping(z, truncation_psi=0.7)          # [B, num_ws, w_dim]
    img = G.synthesis(ws, noise_mode="const")      # [B, 3, H, W], about [-1, 1]
"""

from .loaders import GENERATOR_KIND, load_generator, rosinality_checkpoint, save_generator
from .network import MODULATION_MODES, NOISE_MODES, Generator, GeneratorConfig, standard_channels

__all__ = ["Generator", "GeneratorConfig", "load_generator", "save_generator", "rosinality_checkpoint",
           "standard_channels", "GENERATOR_KIND", "MODULATION_MODES", "NOISE_MODES"]
