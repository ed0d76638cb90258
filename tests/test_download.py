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
