"""A real ComfyUI server for the integration tests, and a small standard-library client for it.

Only the standard library is used (urllib, a minimal websocket reader), so the tests run under
any interpreter that can import the pack's library; the server itself runs under
``$COMFYUI_PYTHON`` (ComfyUI's own environment) when set.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACK_FOLDER = "comfyui-sgim"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ComfyServer:
    """``python main.py --cpu`` on 127.0.0.1 with an isolated base directory holding the pack.

    ``$COMFYUI_FRONTEND_ROOT`` (e.g. ``.../comfyui_frontend_package/static`` of a newer
    comfyui-frontend-package) serves that frontend instead of the pinned one."""

    comfyui_dir: Path
    base: Path
    python: str = sys.executable
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None
    frontend_root: str | None = field(default_factory=lambda: os.environ.get("COMFYUI_FRONTEND_ROOT") or None)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.base / "server.log"

    def prepare(self) -> None:
        (self.base / "custom_nodes").mkdir(parents=True, exist_ok=True)
        link = self.base / "custom_nodes" / PACK_FOLDER
        if not link.exists():
            link.symlink_to(REPO, target_is_directory=True)
        for sub in ("input", "output", "models"):
            (self.base / sub).mkdir(exist_ok=True)

    def start(self, timeout: float = 150.0) -> None:
        self.prepare()
        command = [self.python, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
                   "--base-directory", str(self.base), "--database-url", "sqlite:///:memory:",
                   "--disable-api-nodes"]
        if self.frontend_root:  # another frontend than the one the checkout pins (its static folder)
            command += ["--front-end-root", self.frontend_root]
        log = open(self.log_path, "w")
        # instant-edit analyses go to this server's own models folder, never into the checkout
        env = {"SGIM_INSTANT_CACHE": str(self.base / "models" / "sgim_instant"), **os.environ, "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen(command, cwd=self.comfyui_dir, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.process.returncode}:\n{self.log()[-3000:]}")
            try:
                get_json(f"{self.url}/system_stats", timeout=2)
                return
            except (OSError, urllib.error.URLError):
                time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"ComfyUI did not answer within {timeout} s:\n{self.log()[-3000:]}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def rss_bytes(self) -> int:
        """Resident memory of the server process (Linux /proc)."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("VmRSS not found")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


def copy_inputs(base: Path, audio_dir: Path, names: list[str]) -> None:
    (base / "input").mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copyfile(audio_dir / name, base / "input" / name)


def get_json(url: str, timeout: float = 30):
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.load(response)


def post_json(url: str, payload: dict, timeout: float = 30) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read()
            return response.status, (json.loads(body) if body.strip() else {})
    except urllib.error.HTTPError as exc:
        body = exc.read()
        return exc.code, (json.loads(body) if body.strip() else {})


class WebSocket:
    """Just enough of RFC 6455 to read ComfyUI's messages (and send one text frame)."""

    def __init__(self, host: str, port: int, path: str, timeout: float = 60.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
                           ).encode())
        header = b""
        while b"\r\n\r\n" not in header:
            chunk = self.sock.recv(1)
            if not chunk:
                raise ConnectionError("websocket handshake: connection closed")
            header += chunk
        if b" 101 " not in header.split(b"\r\n", 1)[0]:
            raise ConnectionError(f"websocket handshake refused: {header[:200]!r}")

    def _read(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("websocket closed")
            data += chunk
        return data

    def recv(self) -> tuple[str, object]:
        """("json", dict) for text messages, ("binary", (event_type, payload)) for binary ones."""
        message, opcode = b"", None
        while True:
            first, second = self._read(2)
            fin, op = first & 0x80, first & 0x0F
            length = second & 0x7F
            if length == 126:
                length = struct.unpack(">H", self._read(2))[0]
            elif length == 127:
                length = struct.unpack(">Q", self._read(8))[0]
            mask = self._read(4) if second & 0x80 else None
            payload = self._read(length)
            if mask:
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            if op == 0x9:  # ping -> pong
                self._send(0xA, payload)
                continue
            if op == 0x8:
                raise ConnectionError("websocket closed by server")
            if op in (0x1, 0x2):
                opcode = op
            message += payload
            if fin:
                break
        if opcode == 0x1:
            return "json", json.loads(message.decode())
        return "binary", (struct.unpack(">I", message[:4])[0], message[4:])

    def _send(self, opcode: int, payload: bytes) -> None:
        mask = os.urandom(4)
        header = bytes([0x80 | opcode])
        n = len(payload)
        if n < 126:
            header += bytes([0x80 | n])
        elif n < 65536:
            header += bytes([0x80 | 126]) + struct.pack(">H", n)
        else:
            header += bytes([0x80 | 127]) + struct.pack(">Q", n)
        self.sock.sendall(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    def send_json(self, data: dict) -> None:
        self._send(0x1, json.dumps(data).encode())

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass
