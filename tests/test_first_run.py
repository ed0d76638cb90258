"""First run: `edit` fetches the known default models itself, from a local HTTP server on 127.0.0.1.

The server serves tiny random-weight models written by `make-demo-models` under the names of the
paper's files; `SGIM_MODEL_INDEX` / `SGIM_MODEL_BASE_URL` point the known-model list at it.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sgim_nodes.__main__ import main as cli
from sgim_nodes.demo import write_demo_models
from sgim_nodes.errors import ModelFileError, ParameterError
from sgim_nodes.models import KNOWN_MODELS

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("one_torch_thread")

README_MODELS = {"landscape": "generator", "audio-encoder": "encoder", "clip-vit-b-32": "clip"}


class FileServer:
    """Serves ``files`` {url path: bytes} with HTTP Range support, recording each request."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.requests: list[tuple[str, str | None]] = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server API
                owner.requests.append((self.path, self.headers.get("Range")))
                body = owner.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                start = int(self.headers["Range"].split("=")[1].rstrip("-")) if self.headers.get("Range") else 0
                self.send_response(206 if start else 200)
                if start:  # RFC 9110: a 206 says which bytes it holds
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                self.wfile.write(body[start:])

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture(scope="module")
def demo_models(tmp_path_factory) -> dict[str, Path]:
    return write_demo_models(tmp_path_factory.mktemp("demo"))


@pytest.fixture()
def server():
    s = FileServer()
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()


@pytest.fixture()
def mirror(server, demo_models, tmp_path, monkeypatch) -> FileServer:
    """The three files the README's first command needs, listed in a SGIM_MODEL_INDEX with their sha256."""
    index = {}
    for name, role in README_MODELS.items():
        data = demo_models[role].read_bytes()
        server.files[f"/{name}.bin"] = data
        index[name] = {"url": f"{server.url}/{name}.bin", "sha256": hashlib.sha256(data).hexdigest()}
    (tmp_path / "index.json").write_text(json.dumps(index))
    monkeypatch.setenv("SGIM_MODEL_INDEX", str(tmp_path / "index.json"))
    monkeypatch.setenv("SGIM_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.delenv("SGIM_OFFLINE", raising=False)
    return server


def readme_first_command() -> list[str]:
    """The first line of the README's first code block, split as the shell would."""
    import shlex

    readme = (REPO / "README.md").read_text()
    line = readme.split("```bash\n", 1)[1].splitlines()[0]
    return shlex.split(line, comments=True)


def test_readme_first_command_names_files_a_fresh_clone_has():
    words = readme_first_command()
    assert words[:2] == ["./sgim", "edit"]
    sound = REPO / words[words.index("--audio") + 1]  # as typed in the checkout's root
    assert sound.is_file(), f"the README's first command needs {sound.name}, which the repository does not ship"
    from sgim_nodes.audio.decode import load_audio

    samples, rate = load_audio(sound)
    assert rate == 22050 and samples.shape[-1] == 4 * 22050 and torch.isfinite(samples).all()
    assert 0.05 < float(samples.abs().max()) <= 1.0 and float(samples.std()) > 0.02  # a sound, not silence


def test_shipped_rain_is_what_its_script_makes(tmp_path):
    import runpy

    runpy.run_path(str(REPO / "assets" / "make_rain.py"))["write"](tmp_path / "rain.wav")
    assert (tmp_path / "rain.wav").read_bytes() == (REPO / "assets" / "rain.wav").read_bytes()


def test_readme_first_command_downloads_the_models_and_writes_an_edited_image(mirror, tmp_path, capsys,
                                                                              monkeypatch):
    # The README's first command as typed, in the checkout's root; only --steps is added, to keep the
    # test short (the preset runs 300), and --out goes to a temporary folder.
    words = readme_first_command()
    argv = words[1:] + ["--steps", "2"]
    argv[argv.index("--out") + 1] = str(tmp_path / "edited.png")
    monkeypatch.chdir(REPO)
    assert cli(argv) == 0
    captured = capsys.readouterr()
    assert "first use: downloading 3 model file(s)" in captured.err
    assert sorted(path for path, _ in mirror.requests) == ["/audio-encoder.bin", "/clip-vit-b-32.bin",
                                                          "/landscape.bin"]
    for name in README_MODELS:  # each file is where the registry says, byte for byte
        model = KNOWN_MODELS[name]
        assert (tmp_path / "models" / model.folder / model.filename).read_bytes() == mirror.files[f"/{name}.bin"]
    edited = np.asarray(Image.open(tmp_path / "edited.png"))
    source = np.asarray(Image.open(tmp_path / "edited_source.png"))
    assert edited.shape == source.shape == (64, 64, 3) and not np.array_equal(edited, source)

    mirror.requests.clear()  # second run: the models are found, nothing is fetched
    assert cli(argv) == 0
    assert mirror.requests == []


def test_offline_flag_and_environment_forbid_the_network(mirror, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SGIM_LAUNCHER", "./sgim")
    argv = ["edit", "--text", "a rainy night", "--out", str(tmp_path / "o.png")]
    assert cli(argv + ["--offline"]) == 1
    err = capsys.readouterr().err
    assert "./sgim download landscape" in err and "./sgim download clip-vit-b-32" in err
    monkeypatch.setenv("SGIM_OFFLINE", "1")
    assert cli(argv) == 1
    assert cli(["download", "landscape"]) == 1  # the download command obeys it too
    assert "SGIM_OFFLINE" in capsys.readouterr().err
    assert mirror.requests == [] and not (tmp_path / "models").exists()


def test_a_missing_sound_stops_before_any_download(mirror, tmp_path, capsys):
    assert cli(["edit", "--audio", str(tmp_path / "typo.wav"), "--out", str(tmp_path / "o.png")]) == 1
    assert "--audio: file not found" in capsys.readouterr().err
    assert mirror.requests == []


def test_interrupted_first_run_resumes(mirror, tmp_path):
    from sgim_nodes.download import download

    model = KNOWN_MODELS["audio-encoder"]
    data = mirror.files["/audio-encoder.bin"]
    dest = tmp_path / "models" / model.folder / model.filename
    dest.parent.mkdir(parents=True)
    dest.with_name(dest.name + ".part").write_bytes(data[:12345])  # what an interrupted run leaves
    assert download(model, progress=False) == dest
    assert dest.read_bytes() == data
    assert mirror.requests == [("/audio-encoder.bin", "bytes=12345-")]


def test_checksum_mismatch_keeps_nothing(mirror, tmp_path, monkeypatch, capsys):
    index = json.loads(Path(tmp_path / "index.json").read_text())
    index["landscape"]["sha256"] = "0" * 64
    (tmp_path / "index.json").write_text(json.dumps(index))
    assert cli(["edit", "--text", "x", "--out", str(tmp_path / "o.png")]) == 1
    assert "checksum mismatch" in capsys.readouterr().err
    folder = tmp_path / "models" / "stylegan"
    assert list(folder.iterdir()) == []  # neither the file nor a .part is kept


def test_base_url_mirror_keeps_the_publishers_checksum(server, demo_models, tmp_path, monkeypatch):
    """A mirror holds the same files as <base>/<folder>/<filename>; OpenAI's published sha256 still applies,
    so a tiny file served as ViT-B-32.pt is refused, and a model without a published checksum is taken."""
    from sgim_nodes.download import download

    monkeypatch.setenv("SGIM_MODEL_BASE_URL", server.url + "/mirror/")
    monkeypatch.setenv("SGIM_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.delenv("SGIM_MODEL_INDEX", raising=False)
    monkeypatch.delenv("SGIM_OFFLINE", raising=False)
    server.files["/mirror/sgim_clip/ViT-B-32.pt"] = demo_models["clip"].read_bytes()
    server.files["/mirror/stylegan/landscape.pt"] = demo_models["generator"].read_bytes()
    with pytest.raises(ModelFileError, match="checksum mismatch"):
        download(KNOWN_MODELS["clip-vit-b-32"], progress=False)
    assert not (tmp_path / "models" / "sgim_clip" / "ViT-B-32.pt").exists()
    path = download(KNOWN_MODELS["landscape"], progress=False)
    assert path.read_bytes() == demo_models["generator"].read_bytes()
    assert [p for p, _ in server.requests] == ["/mirror/sgim_clip/ViT-B-32.pt", "/mirror/stylegan/landscape.pt"]


def test_bad_model_index_is_a_clear_error(tmp_path, monkeypatch):
    from sgim_nodes.models import model_source

    (tmp_path / "index.json").write_text('{"landscape": {"sha256": null}}')
    monkeypatch.setenv("SGIM_MODEL_INDEX", str(tmp_path / "index.json"))
    with pytest.raises(ParameterError, match="SGIM_MODEL_INDEX.*'landscape' needs a \"url\""):
        model_source(KNOWN_MODELS["landscape"])


@pytest.mark.parametrize("distance, missing", [("lpips", "vgg16"), ("clip", "clip-vit-b-32")])
def test_project_offline_names_its_missing_defaults(tmp_path, monkeypatch, capsys, distance, missing):
    # project looks its defaults up as edit does: offline, one clear missing-models line, no traceback
    monkeypatch.setenv("SGIM_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("SGIM_OFFLINE", "1")
    picture = tmp_path / "p.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(picture)
    assert cli(["project", str(picture), "--distance", distance, "--out", str(tmp_path / "c.safetensors")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    assert "offline, so nothing was downloaded" in err
    assert "download landscape" in err and f"download {missing}" in err
