"""Test-side writer of TensorFlow StyleGAN2 pickles, following the container the fixtures' README
describes: ``(G, D, Gs)`` of ``dnnlib.tflib.network.Network`` objects (NEWOBJ + state dict + BUILD),
variables as numpy arrays, 0-d variables as numpy scalars.

The variables are made from one of our generators by inverting the published TF -> PyTorch
conversion rules, so a loaded file can be compared with the generator it was written from. The
Network class exists only while writing (a stand-in module, removed afterwards); the loader must
never import it.
"""

from __future__ import annotations

import io
import math
import pickle
import sys
import types
from pathlib import Path

import numpy as np
import torch

from sgim_nodes.stylegan import Generator


def _np(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().float().cpu().numpy())


def tf_variables(gen: Generator, lr_mul: float | None = None) -> tuple[list, list, list]:
    """(Gs own, mapping, synthesis) variables in TF creation order and layout."""
    cfg, ours = gen.config, {k: v.detach().float() for k, v in gen.state_dict().items()}
    lr_mul = cfg.mapping_lr_mul if lr_mul is None else lr_mul
    mapping = []
    if cfg.c_dim and cfg.label_mode == "concat":
        mapping.append(("LabelConcat/weight", _np(ours["mapping_network.label_weight"].t())))
    elif cfg.c_dim:
        mapping.append(("LabelEmbed/weight", _np((ours["mapping_network.label_weight"] * math.sqrt(cfg.c_dim)).t())))
        mapping.append(("LabelEmbed/bias", _np(ours["mapping_network.label_bias"])))
    for i in range(cfg.n_mapping):
        weight = ours[f"mapping_network.weights.{i}"]
        mapping.append((f"Dense{i}/weight", _np((weight * math.sqrt(weight.shape[1]) / lr_mul).t())))
        mapping.append((f"Dense{i}/bias", _np(ours[f"mapping_network.biases.{i}"] / lr_mul)))

    convs = len(gen.synthesis_network.convs)
    synthesis = [(f"noise{j}", _np(ours[f"synthesis_network.convs.{j}.noise_const"][None, None])) for j in range(convs)]
    synthesis.append(("4x4/Const/const", _np(ours["synthesis_network.const"][None])))

    def modulated(name: str, src: str, up: bool, noise: bool) -> None:
        weight = ours[src + "weight"]
        hwio = (weight * math.sqrt(weight[0].numel())).permute(2, 3, 1, 0)
        if up:
            hwio = hwio.flip(0, 1)
        synthesis.append((name + "/weight", _np(hwio)))
        synthesis.append((name + "/mod_weight", _np((ours[src + "affine_weight"] * math.sqrt(cfg.w_dim)).t())))
        synthesis.append((name + "/mod_bias", _np(ours[src + "affine_bias"] - 1)))
        if noise:
            synthesis.append((name + "/noise_strength", np.float32(ours[src + "noise_strength"].item())))
        synthesis.append((name + "/bias", _np(ours[src + "bias"])))

    def torgb(res: int, k: int) -> None:
        src = f"synthesis_network.torgbs.{k}."
        weight = ours[src + "weight"]  # [O, I]
        synthesis.append((f"{res}x{res}/ToRGB/weight", _np((weight * math.sqrt(weight.shape[1])).t()[None, None])))
        synthesis.append((f"{res}x{res}/ToRGB/mod_weight", _np((ours[src + "affine_weight"] * math.sqrt(cfg.w_dim)).t())))
        synthesis.append((f"{res}x{res}/ToRGB/mod_bias", _np(ours[src + "affine_bias"] - 1)))
        synthesis.append((f"{res}x{res}/ToRGB/bias", _np(ours[src + "bias"])))

    modulated("4x4/Conv", "synthesis_network.convs.0.", False, True)
    torgb(4, 0)
    for k, res in enumerate(cfg.block_resolutions[1:], start=1):
        modulated(f"{res}x{res}/Conv0_up", f"synthesis_network.convs.{2 * k - 1}.", True, True)
        modulated(f"{res}x{res}/Conv1", f"synthesis_network.convs.{2 * k}.", False, True)
        torgb(res, k)
    return [("lod", np.float32(0.0)), ("dlatent_avg", _np(ours["w_avg"]))], mapping, synthesis


def static_kwargs(gen: Generator, ada: bool, **overrides) -> dict:
    cfg = gen.config
    kwargs = {"num_channels": cfg.img_channels, "resolution": cfg.resolution, "label_size": cfg.c_dim,
              "latent_size": cfg.z_dim, "dlatent_size": cfg.w_dim, "mapping_layers": cfg.n_mapping,
              "fmap_base": cfg.channels[4] * 2, "fmap_max": max(cfg.channels.values())}
    if cfg.n_mapping > 1:
        kwargs["mapping_fmaps"] = cfg.mapping_hidden or cfg.w_dim
    if ada and cfg.c_dim:
        kwargs["label_fmaps"] = cfg.label_width
    if cfg.conv_clamp is not None:
        kwargs["conv_clamp"] = cfg.conv_clamp
    kwargs.update(overrides)
    return {k: v for k, v in kwargs.items() if v is not None}


class NetworkRecord:
    """What one ``Network.__getstate__`` returns, and the module/class it is pickled as."""

    def __init__(self, state: dict, module: str = "dnnlib.tflib.network", cls: str = "Network"):
        self.state, self.module, self.cls = state, module, cls


def network_state(name: str, func: str, kwargs: dict, variables: list, components: dict | None = None,
                  version: int = 4, source: str = "# source omitted") -> dict:
    state = {"version": version, "name": name, "static_kwargs": dict(kwargs), "components": components or {},
             "build_module_src": source, "build_func_name": func, "variables": variables}
    if version >= 5:
        state.update(input_shapes=[[None, 1]], output_shapes=[[None, 1]], input_names=["x"], output_names=["y"])
    return state


def generator_records(gen: Generator, ada: bool = False, kwargs: dict | None = None, name: str = "Gs",
                      lr_mul: float | None = None) -> NetworkRecord:
    kwargs = static_kwargs(gen, ada) if kwargs is None else kwargs
    own, mapping, synthesis = tf_variables(gen, lr_mul)
    if ada:
        own = [v for v in own if v[0] != "lod"]
    version = 5 if ada else 4
    components = {
        "synthesis": NetworkRecord(network_state("G_synthesis", "G_synthesis" if ada else "G_synthesis_stylegan2",
                                                 kwargs, synthesis, version=version)),
        "mapping": NetworkRecord(network_state("G_mapping", "G_mapping", {"dlatent_broadcast": gen.num_ws, **kwargs},
                                               mapping, version=version)),
    }
    return NetworkRecord(network_state(name, "G_main", kwargs, own, components, version=version))


def discriminator_record(func: str = "D_stylegan2") -> NetworkRecord:
    return NetworkRecord(network_state("D", func, {"resolution": 8}, [("Output/bias", np.zeros(1, np.float32))]))


def write_tf_pickle(path: Path, networks, protocol: int = 4) -> Path:
    """Pickle ``networks`` (a tuple of NetworkRecords, or one) as TF code does, through stand-in classes
    that exist only while writing."""
    created: dict[str, types.ModuleType] = {}
    classes: dict[tuple[str, str], type] = {}

    def stand_in(module: str, cls: str) -> type:
        if (module, cls) not in classes:
            parts = module.split(".")
            for i in range(1, len(parts) + 1):
                mod_name = ".".join(parts[:i])
                assert mod_name not in sys.modules or mod_name in created, f"{mod_name} must not be importable"
                if mod_name not in created:
                    created[mod_name] = types.ModuleType(mod_name)
                    if i > 1:
                        setattr(created[".".join(parts[:i - 1])], parts[i - 1], created[mod_name])
            klass = type(cls, (), {"__module__": module, "__getstate__": lambda self: self._state})
            setattr(created[module], cls, klass)
            classes[(module, cls)] = klass
        return classes[(module, cls)]

    def convert(obj):
        if isinstance(obj, NetworkRecord):
            instance = object.__new__(stand_in(obj.module, obj.cls))
            state = dict(obj.state)
            state["components"] = {k: convert(v) for k, v in state["components"].items()}
            instance._state = state
            return instance
        if isinstance(obj, tuple):
            return tuple(convert(o) for o in obj)
        return obj

    buf = io.BytesIO()
    try:
        tree = convert(networks)
        sys.modules.update(created)
        pickle.Pickler(buf, protocol=protocol).dump(tree)
    finally:
        for name in created:
            sys.modules.pop(name, None)
    path.write_bytes(buf.getvalue())
    return path
