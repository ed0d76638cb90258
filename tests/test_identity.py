"""ArcFace IR-SE50 identity loss: the real file layout, loading errors, face crop, gradient to w."""

from __future__ import annotations

import pytest
import torch

from sgim_nodes.errors import ModelFileError
from sgim_nodes.optimize import IRSE50, TINY_IRSE, IRSEBackbone, face_crop, identity_features, identity_loss, load_id_model



pytestmark = pytest.mark.usefixtures("one_torch_thread")

def test_real_layout_key_names_and_shapes():
    state = IRSEBackbone(IRSE50).state_dict()
    # model_ir_se50.pth: 24 bottleneck units (3 + 4 + 14 + 3).
    assert sum(1 for k in state if k.endswith("res_layer.5.fc1.weight")) == 24
    assert state["input_layer.0.weight"].shape == (64, 3, 3, 3)
    assert state["input_layer.2.weight"].shape == (64,)
    assert state["body.0.res_layer.5.fc1.weight"].shape == (4, 64, 1, 1)
    assert "body.0.shortcut_layer.0.weight" not in state  # 64 -> 64: the parameter-free subsampling shortcut
    assert state["body.3.shortcut_layer.0.weight"].shape == (128, 64, 1, 1)
    assert state["body.23.res_layer.3.weight"].shape == (512, 512, 3, 3)
    assert state["output_layer.3.weight"].shape == (512, 512 * 7 * 7)
    assert state["output_layer.4.running_var"].shape == (512,)
    # Counts checked against the official Backbone(112, 50, 'ir_se') (identical key set, outputs equal).
    assert len(state) == 397 and sum(v.numel() for v in state.values()) == 43_824_118


def test_load_roundtrip_and_errors(tmp_path):
    torch.manual_seed(0)
    model = IRSEBackbone(TINY_IRSE).eval()
    path = tmp_path / "tiny_ir_se.pth"
    torch.save({f"module.{k}": v for k, v in model.state_dict().items()}, path)  # DataParallel prefix
    loaded = load_id_model(path, config=TINY_IRSE)
    faces = torch.randn(2, 3, 112, 112)
    torch.testing.assert_close(loaded(faces), model(faces), rtol=0, atol=0)
    assert not any(p.requires_grad for p in loaded.parameters()) and not loaded.training

    with pytest.raises(ModelFileError, match="not found.*model_ir_se50"):
        load_id_model(tmp_path / "missing.pth")
    with pytest.raises(ModelFileError, match="not an ArcFace IR-SE50.*missing"):
        load_id_model(path)  # tiny file read as the real architecture: shapes and keys differ
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(ModelFileError, match="junk.pth: not a readable"):
        load_id_model(junk)


def test_face_crop_geometry():
    img = torch.zeros(1, 1, 1024, 1024)
    img[..., 4 * 35:4 * 223, 4 * 32:4 * 220] = 1.0  # exactly the crop window after the 4x4 pool
    crop = face_crop(img)
    assert crop.shape == (1, 1, 112, 112)
    assert crop.min() == 1.0
    ramp = torch.arange(256.0).expand(1, 1, 256, 256)
    crop = face_crop(ramp)  # columns 32..219 averaged down to 112
    assert crop[0, 0, 0, 0] == pytest.approx(32.5, abs=1e-4) and crop[0, 0, 0, -1] == pytest.approx(218.5, abs=1e-4)


def test_identity_gradient_reaches_w():
    from sgim_nodes.stylegan import Generator, GeneratorConfig

    torch.manual_seed(1)
    gen = Generator(GeneratorConfig(resolution=32, z_dim=32, w_dim=32, n_mapping=2,
                                    channels={4: 16, 8: 16, 16: 16, 32: 16}))
    model = IRSEBackbone(TINY_IRSE).eval().requires_grad_(False)
    source_ws = gen.mapping(torch.randn(2, 32))
    with torch.no_grad():
        source_features = identity_features(model, gen.synthesis(source_ws))
    ws = (source_ws + 0.3 * torch.randn_like(source_ws)).requires_grad_()
    loss = identity_loss(model, gen.synthesis(ws), source_features)
    assert loss.shape == (2,) and (loss > 1e-4).all()
    (grad,) = torch.autograd.grad(loss.sum(), ws)
    assert grad.abs().sum() > 1e-3
    # The loss is zero (up to rounding) at the source itself.
    assert identity_loss(model, gen.synthesis(source_ws), source_features).abs().max() < 1e-5
