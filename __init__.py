"""ComfyUI entry point of the comfyui-sgim node pack.

ComfyUI imports this folder as a package (by file path, so only relative imports work here).
The nodes themselves live in nodes.py; the library in sgim_nodes/ never imports ComfyUI.
"""

WEB_DIRECTORY = "./web"

if __package__:  # imported as a package, as ComfyUI does
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
else:
    # Imported as a lone module: pytest does this with the repository root when the checkout's folder
    # name is not a Python identifier (e.g. "comfyui-sgim"). There is no pack to register then.
    NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = {}, {}

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
