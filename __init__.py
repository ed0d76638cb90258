"""ComfyUI entry point of the comfyui-sgim node pack.

ComfyUI imports this folder as a package (by file path, so only relative imports work here).
The nodes themselves live in nodes.py; the library in sgim_nodes/ never imports ComfyUI.
"""

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

WEB_DIRECTORY = "./web"

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
