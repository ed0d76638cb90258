"""Class labels for conditional generators: one rule for the nodes, the command line and Python.

A conditional generator (``G.c_dim`` > 0) maps z together with a label vector c [B, c_dim]: one-hot
for a class, or any soft vector. Users pick a class by index, or by name when the generator carries
class names (``G.class_names``; our ``.safetensors`` files store them when given to ``convert
--class-names``; no NVlabs or TensorFlow pickle records them, so those generators take indices only).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F

from ..errors import ParameterError

NO_CLASS = -1  # "no class chosen": unconditional generators; conditional ones draw a class per image


def class_labels(generator, labels: Any, batch: int, rng: torch.Generator | None = None,
                 name: str = "labels") -> torch.Tensor | None:
    """The label tensor [batch, c_dim] (CPU float32) for ``labels``, or None for an unconditional generator.

    ``labels``: None or -1 (no class chosen), a class index, a class name (or its index as text), a
    sequence of one index/name per image, or a tensor [c_dim] / [batch, c_dim] of (soft) labels. With no
    class chosen, a conditional generator gets one uniformly random class per image drawn from ``rng``
    (so a seed gives the same classes every time). ``name`` is the input or option named in errors.
    """
    c_dim = int(getattr(generator, "c_dim", 0) or 0)
    chosen = not _is_no_class(labels)
    if not c_dim:
        if chosen:
            raise ParameterError(f"{name}: generator '{generator.name}' is unconditional (it has no classes); "
                                 f"leave the class at {NO_CLASS} / unset", parameter="labels")
        return None
    if not chosen:
        return F.one_hot(torch.randint(c_dim, (batch,), generator=rng), c_dim).float()
    if isinstance(labels, torch.Tensor) and labels.is_floating_point():
        soft = labels.detach().float().cpu()
        soft = soft[None] if soft.ndim == 1 else soft
        if soft.ndim != 2 or soft.shape[1] != c_dim or soft.shape[0] not in (1, batch):
            raise ParameterError(f"{name}: expected label vectors of shape [{batch}, {c_dim}] or [{c_dim}], got "
                                 f"{list(labels.shape)}", parameter="labels")
        if not torch.isfinite(soft).all():
            raise ParameterError(f"{name}: label vectors contain NaN or infinite values", parameter="labels")
        return soft.expand(batch, -1).clone()
    items = labels.tolist() if isinstance(labels, torch.Tensor) else labels
    items = list(items) if isinstance(items, (list, tuple)) else [items]
    if len(items) not in (1, batch):
        raise ParameterError(f"{name}: got {len(items)} classes for {batch} images", parameter="labels")
    indices = [class_index(generator, item, name) for item in items]
    return F.one_hot(torch.tensor(indices), c_dim).float().expand(batch, -1).clone()


def class_index(generator, label: Any, name: str = "labels") -> int:
    """One class as an index in ``0 .. c_dim-1``: from an int, its text, or a name in ``G.class_names``."""
    c_dim = int(getattr(generator, "c_dim", 0) or 0)
    names: Sequence[str] | None = getattr(generator, "class_names", None)
    if isinstance(label, str):
        import re

        from ..limits import MAX_NAME_CHARS, short_repr

        text = label.strip()
        if len(text) > MAX_NAME_CHARS:
            raise ParameterError(f"{name}: a class name or index of {len(text):,} characters ({short_repr(text, 40)}); "
                                 f"class names are at most {MAX_NAME_CHARS}", parameter="labels")
        if names and text in names:  # a name first: class names may themselves be digits ("1", "2", ...)
            return list(names).index(text)
        if re.fullmatch(r"-?[0-9]{1,12}", text):  # ASCII digits only: "²".isdigit() is true too
            label = int(text)
        else:
            known = (f"its classes are {_preview(names)}" if names else
                     "the file carries no class names, so give the class as an index")
            raise ParameterError(f"{name}: generator '{generator.name}' has no class named {text!r}; {known} "
                                 f"(0..{c_dim - 1})", parameter="labels")
    if isinstance(label, bool) or not isinstance(label, int):
        raise ParameterError(f"{name}: expected a class index or name, got {label!r}", parameter="labels")
    if not 0 <= label < c_dim:
        raise ParameterError(f"{name}: class {label} is out of range: generator '{generator.name}' has {c_dim} "
                             f"classes (0..{c_dim - 1})", parameter="labels")
    return label


def _is_no_class(labels: Any) -> bool:
    if labels is None:
        return True
    if isinstance(labels, str):
        return labels.strip() in ("", str(NO_CLASS), "none")
    return isinstance(labels, int) and not isinstance(labels, bool) and labels == NO_CLASS


def _preview(names: Sequence[str], n: int = 8) -> str:
    shown = ", ".join(repr(x) for x in list(names)[:n])
    return shown + (f", ... ({len(names)} in all)" if len(names) > n else "")
