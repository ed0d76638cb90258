"""comfyui-sgim library: Sound-Guided Semantic Image Manipulation (Lee et al., CVPR 2022).

Importable on its own, without ComfyUI. Submodules load lazily so that ``import sgim_nodes``
stays cheap (ComfyUI times every pack's import):

- ``sgim_nodes.stylegan``  StyleGAN2 and StyleGAN3 generators, safe loaders for rosinality / NVlabs / safetensors
- ``sgim_nodes.audio``     audio decoding, the paper's preprocessing, the audio encoder
- ``sgim_nodes.clip``      open_clip models from local files, text/image embeddings, exact resize
- ``sgim_nodes.optimize``  the sound-guided W+ optimiser (objective, layer masks, identity loss)
- ``sgim_nodes.train``     training the audio encoder; ``sgim_nodes.evaluate`` zero-shot evaluation
"""

__version__ = "0.1.0"
