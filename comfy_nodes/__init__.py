"""The node classes of the pack by area, and ``host``: the one module that touches ComfyUI (see nodes.py)."""
