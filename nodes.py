"""ComfyUI nodes of comfyui-sgim: thin adapters over the sgim_nodes library (filled in by the node issue)."""

NODE_CLASS_MAPPINGS: dict = {}
NODE_DISPLAY_NAME_MAPPINGS: dict = {}
