"""``project`` fetches its known default VGG16 on first use, from a local HTTP server on 127.0.0.1.

The registry's VGG16 entry is pointed at the server, with the checksum of the stand-in served there (a
random VGG16 in torchvision's layout, as ``make-demo-models`` writes it), given as the registry gives the
real one: torchvision's 8-digit sha256 prefix. The real entry's address and checksum are never changed in
the code; the test replaces them for its own run.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import pytest
from PIL import Image

from sgim_nodes.__main__ import main as cli
from sgim_nodes.models import KNOWN_MODELS
from test_first_run import FileServer

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def stand_in(tmp_path_factory) -> bytes:
    from sgim_nodes.demo import save_random_vgg16

    path = tmp_path_factory.mktemp("vgg") / "vgg16.pth"
    save_random_vgg16(path)
    return path.read_bytes()


@pytest.fixture()
def served(stand_in, tmp_path, monkeypatch):
    from test_project import tiny_generator

    from sgim_nodes.stylegan import save_generator

    server = FileServer()
    server.files["/models/vgg16-397923af.pth"] = stand_in
    monkeypatch.setenv("SGIM_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.delenv("SGIM_OFFLINE", raising=False)
    monkeypatch.delenv("SGIM_MODEL_INDEX", raising=False)
    monkeypatch.delenv("SGIM_MODEL_BASE_URL", raising=False)

    def publish(sha256: str) -> None:
        entry = dataclasses.replace(KNOWN_MODELS["vgg16"], url=server.url + "/models/vgg16-397923af.pth",
                                    sha256=sha256)
        monkeypatch.setitem(KNOWN_MODELS, "vgg16", entry)

    save_generator(tiny_generator(32), tmp_path / "g.safetensors")
    Image.new("RGB", (32, 32), (200, 120, 40)).save(tmp_path / "photo.png")
    yield server, publish
    server.httpd.shutdown()
    server.httpd.server_close()


def _project(tmp_path: Path) -> list[str]:
    return ["project", str(tmp_path / "photo.png"), "--generator", str(tmp_path / "g.safetensors"),
            "--out", str(tmp_path / "code.safetensors"), "--steps", "2", "--device", "cpu"]


def test_project_downloads_vgg16_verifies_it_and_uses_it(served, stand_in, tmp_path, capsys):
    server, publish = served
    publish(hashlib.sha256(stand_in).hexdigest()[:8])  # as published: the first 8 hex digits
    assert cli(_project(tmp_path)) == 0  # the default distance, LPIPS, needs VGG16
    err = capsys.readouterr().err
    assert "first use: downloading 1 model file(s)" in err
    dest = tmp_path / "models" / "sgim_vgg" / "vgg16-397923af.pth"
    assert dest.read_bytes() == stand_in
    assert [p.name for p in dest.parent.iterdir()] == [dest.name]  # no .part left
    assert (tmp_path / "code.safetensors").is_file() and (tmp_path / "code_projection.png").is_file()
    assert [path for path, _ in server.requests] == ["/models/vgg16-397923af.pth"]
    # the next run finds it: no second request
    assert cli(_project(tmp_path) + ["--overwrite"]) == 0
    assert len(server.requests) == 1


def test_project_refuses_a_vgg16_with_the_wrong_checksum(served, stand_in, tmp_path, capsys):
    server, publish = served
    wrong = hashlib.sha256(stand_in + b"x").hexdigest()[:8]
    publish(wrong)
    assert cli(_project(tmp_path)) == 1
    err = capsys.readouterr().err.strip()
    last = err.splitlines()[-1]  # the download's progress lines come first
    assert last.startswith("error: ") and "checksum mismatch" in last and wrong in last, err
    assert "Traceback" not in err and sum(line.startswith("error:") for line in err.splitlines()) == 1
    folder = tmp_path / "models" / "sgim_vgg"
    assert list(folder.iterdir()) == []  # neither the file nor a .part under any name
    assert not (tmp_path / "code.safetensors").exists() and not (tmp_path / "code_projection.png").exists()
    assert [path for path, _ in server.requests] == ["/models/vgg16-397923af.pth"]
