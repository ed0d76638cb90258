"""The download command against a local HTTP server on 127.0.0.1 (resume, checksum, offline)."""

from __future__ import annotations

import hashlib
import http.server
import threading
from pathlib import Path

import pytest

from sgim_nodes import download as dl
from sgim_nodes.errors import ModelFileError
from sgim_nodes.models import KNOWN_MODELS, KnownModel

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB of known bytes


class _RangeHandler(http.server.BaseHTTPRequestHandler):
    requests: list[str | None] = []

    def do_GET(self):  # noqa: N802 - http.server API
        range_header = self.headers.get("Range")
        type(self).requests.append(range_header)
        start = int(range_header.split("=")[1].rstrip("-")) if range_header else 0
        body = PAYLOAD[start:]
        self.send_response(206 if range_header else 200)
        if range_header:  # RFC 9110: a 206 says which bytes it holds
            self.send_header("Content-Range", f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture()
def server():
    _RangeHandler.requests = []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _RangeHandler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/model.bin"
    httpd.shutdown()


def _model(sha: str | None) -> KnownModel:
    return KnownModel(name="t", filename="model.bin", folder="stylegan", description="test", url="unused", sha256=sha)


def test_download_verifies_checksum_and_resumes(server, tmp_path: Path):
    sha = hashlib.sha256(PAYLOAD).hexdigest()
    dest = tmp_path / "model.bin"
    # an interrupted earlier run left the first 1000 bytes
    (tmp_path / "model.bin.part").write_bytes(PAYLOAD[:1000])
    path = dl.download(_model(sha), dest, url=server, progress=False)
    assert path.read_bytes() == PAYLOAD
    assert _RangeHandler.requests == ["bytes=1000-"]
    assert not (tmp_path / "model.bin.part").exists()


def test_download_checksum_mismatch_removes_file(server, tmp_path: Path):
    dest = tmp_path / "model.bin"
    with pytest.raises(ModelFileError, match="checksum mismatch"):
        dl.download(_model("0" * 64), dest, url=server, progress=False)
    assert not dest.exists() and not (tmp_path / "model.bin.part").exists()


def test_offline_prints_manual_instructions(tmp_path: Path, capsys, monkeypatch):
    def refuse(*args, **kwargs):
        raise dl.urllib.error.URLError("no network")

    monkeypatch.setattr(dl.urllib.request, "urlopen", refuse)
    assert dl.main(["clip-vit-b-32", "--dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert KNOWN_MODELS["clip-vit-b-32"].url in err
    assert str(tmp_path / "sgim_clip" / "ViT-B-32.pt") in err
    assert KNOWN_MODELS["clip-vit-b-32"].sha256 in err


def test_manual_only_model_explains_where(tmp_path: Path, capsys):
    assert dl.main(["ir-se50", "--dir", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert str(tmp_path / "sgim_identity" / "model_ir_se50.pth") in out


# The published addresses of the generators artists use, exactly as their publishers print them.
PUBLISHED = {
    "wikiart": "https://archive.org/download/wikiart-1024-stylegan3-t-17.2Mimg/wikiart-1024-stylegan3-t-17.2Mimg.pkl",
    "lhq-256": "https://archive.org/download/lhq-256-stylegan3-t-25Mimg/lhq-256-stylegan3-t-25Mimg.pkl",
    "stylegan3-t-metfaces-1024x1024": "https://api.ngc.nvidia.com/v2/models/nvidia/research/stylegan3/versions/1/"
                                      "files/stylegan3-t-metfaces-1024x1024.pkl",
    "stylegan3-r-metfacesu-1024x1024": "https://api.ngc.nvidia.com/v2/models/nvidia/research/stylegan3/versions/1/"
                                       "files/stylegan3-r-metfacesu-1024x1024.pkl",
    "stylegan3-r-afhqv2-512x512": "https://api.ngc.nvidia.com/v2/models/nvidia/research/stylegan3/versions/1/"
                                  "files/stylegan3-r-afhqv2-512x512.pkl",
    "stylegan3-t-ffhq-1024x1024": "https://api.ngc.nvidia.com/v2/models/nvidia/research/stylegan3/versions/1/"
                                  "files/stylegan3-t-ffhq-1024x1024.pkl",
    "stylegan2-metfaces-1024x1024": "https://api.ngc.nvidia.com/v2/models/nvidia/research/stylegan2/versions/1/"
                                    "files/stylegan2-metfaces-1024x1024.pkl",
}


@pytest.mark.parametrize("name", PUBLISHED)
def test_published_generators_recorded_exactly_without_invented_checksums(name):
    model = KNOWN_MODELS[name]
    assert model.url == PUBLISHED[name]
    assert model.filename == PUBLISHED[name].rsplit("/", 1)[1]
    assert model.folder == "stylegan"
    assert model.sha256 is None and "no checksum published" in model.source


def test_every_ngc_stylegan3_file_follows_the_published_pattern():
    ngc = [m for m in KNOWN_MODELS.values() if m.url and "/stylegan3/versions/1/files/" in m.url]
    assert len(ngc) == 12  # the twelve files the stylegan3 README lists
    for model in ngc:
        assert model.url == ("https://api.ngc.nvidia.com/v2/models/nvidia/research/stylegan3/versions/1/files/"
                             + model.filename)
        assert model.name + ".pkl" == model.filename and model.sha256 is None


@pytest.mark.parametrize("name", ["wikiart-sg2-tf", "wikiart-sg2-tf-conditional"])
def test_tensorflow_wikiart_models_are_manual(tmp_path: Path, capsys, name):
    model = KNOWN_MODELS[name]
    assert model.url is None and model.sha256 is None and "Google Drive" in model.manual
    assert dl.main([name, "--dir", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert str(tmp_path / "stylegan" / model.filename) in out and "Google Drive" in out


def test_offline_wikiart_names_the_address_and_no_checksum(tmp_path: Path, capsys, monkeypatch):
    def refuse(*args, **kwargs):
        raise dl.urllib.error.URLError("no network")

    monkeypatch.setattr(dl.urllib.request, "urlopen", refuse)
    assert dl.main(["wikiart", "--dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert PUBLISHED["wikiart"] in err
    assert str(tmp_path / "stylegan" / "wikiart-1024-stylegan3-t-17.2Mimg.pkl") in err
    assert "sha256" not in err
