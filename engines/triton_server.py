"""A local Triton Inference Server: the ``tritonserver`` binary that the ``nvidia-pytriton`` wheel ships.

That wheel pins numpy < 2, so it lives in its own Python environment (``make .venv-triton``); the
server's Python-backend models run in that environment, with this checkout's ``runtime`` on their
path. The server listens on ``address`` only, on free ports (kept by ``restart``); starting waits
(bounded) until it is ready and reports the log's tail if it exits or stays unready. ``rss_bytes``
is the resident memory of the server with its Python-backend stubs (one process per model instance).
"""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import runtime
from runtime.bundle import BundleError


def _free_port(address: str) -> int:
    with socket.socket() as probe:
        probe.bind((address, 0))
        return probe.getsockname()[1]


def _process_tree(root: int) -> list[int]:
    """``root`` and every process under it (from ``/proc``)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:  # "pid (name) state ppid ...": the name may hold spaces and parentheses
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):  # a process that ended meanwhile
            continue
        children.setdefault(parent, []).append(int(stat.parent.name))
    tree, frontier = [root], [root]
    while frontier:
        frontier = [child for pid in frontier for child in children.get(pid, [])]
        tree += frontier
    return tree


def _running(pid: int, marker: str) -> bool:
    """Whether process ``pid`` still runs (not ended, not a zombie waiting to be reaped) with ``marker`` in its
    command line (so that a number reused by another process is never taken for it)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state not in "ZX" and marker in Path(f"/proc/{pid}/cmdline").read_text(errors="replace")
    except (OSError, IndexError):
        return False


def _site_packages(python: Path) -> Path:
    env = python.absolute().parent.parent
    found = sorted(env.glob("lib/python3.*/site-packages/pytriton/tritonserver/bin/tritonserver"))
    if not found:
        raise BundleError(f"no tritonserver binary under {env} (expected nvidia-pytriton installed there): "
                          "make .venv-triton, or pass --python of an environment with nvidia-pytriton")
    return found[0].parents[3]


class LocalServer:
    """``with LocalServer(repo, python) as server:`` serves ``repo`` at ``server.http_url`` / ``server.grpc_url``."""

    def __init__(self, repository: str | Path, python: str | Path, *, address: str = "127.0.0.1",
                 startup_timeout: float = 180.0, log: str | Path | None = None):
        self.repository, self.address, self.startup_timeout = Path(repository).absolute(), address, startup_timeout
        self.site = _site_packages(Path(python))
        self.env_bin = Path(python).absolute().parent
        self.workspace = Path(tempfile.mkdtemp(prefix="tritonserver-"))
        self.log_path = Path(log) if log else self.workspace / "server.log"
        self.process: subprocess.Popen | None = None
        self.http_port = self.grpc_port = self.metrics_port = 0

    @property
    def http_url(self) -> str:
        return f"http://{self.address}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"grpc://{self.address}:{self.grpc_port}"

    def _backends(self) -> Path:
        """The Python backend with the stub built for the environment's Python version (prepared once)."""
        server = self.site / "pytriton" / "tritonserver"
        version = self.site.parent.name.removeprefix("python")
        python_backend = self.workspace / "backends" / "python"
        if (python_backend / "triton_python_backend_stub").is_file():  # a restart: the stub is ready
            return self.workspace / "backends"
        python_backend.mkdir(parents=True, exist_ok=True)
        for name in ("libtriton_python.so", "triton_python_backend_utils.py"):
            shutil.copyfile(server / "backends" / "python" / name, python_backend / name)
        stub = python_backend / "triton_python_backend_stub"
        shutil.copyfile(server / "python_backend_stubs" / version / "triton_python_backend_stub", stub)
        stub.chmod(0o755)
        env = {**os.environ, "LD_LIBRARY_PATH": str(self.site / "nvidia_pytriton.libs")}
        links = subprocess.run(["ldd", str(stub)], capture_output=True, text=True, env=env, timeout=30).stdout
        missing = [line.split()[0] for line in links.splitlines() if "not found" in line]
        if missing:
            raise BundleError(f"the Python backend stub for Python {version} needs {', '.join(missing)}, not on this "
                              f"system: install it (Debian/Ubuntu: apt-get install libpython{version})")
        return self.workspace / "backends"

    def log_tail(self, lines: int = 12) -> str:
        """The log's error lines and its last ``lines`` lines."""
        text = self.log_path.read_text(encoding="utf-8", errors="replace") if self.log_path.is_file() else ""
        errors = [line[:2000] for line in text.splitlines() if line.startswith("E")]
        return "\n".join([*errors[-lines:], "...", *text.splitlines()[-lines:]])

    def start(self) -> "LocalServer":
        """Start the server (on the ports it had, after ``stop``) and wait until it is ready."""
        if not self.http_port:
            self.http_port, self.grpc_port, self.metrics_port = (_free_port(self.address) for _ in range(3))
        env = dict(os.environ)
        env["LD_LIBRARY_PATH"] = ":".join(filter(None, [str(self.site / "nvidia_pytriton.libs"),
                                                        env.get("LD_LIBRARY_PATH")]))
        env["PATH"] = f"{self.env_bin}:{env['PATH']}"  # the stub's Python finds its environment from here
        env["PYTHONPATH"] = str(Path(runtime.__file__).parents[1])
        command = [str(self.site / "pytriton" / "tritonserver" / "bin" / "tritonserver"),
                   f"--model-repository={self.repository}", f"--backend-directory={self._backends()}",
                   f"--http-address={self.address}", f"--grpc-address={self.address}",
                   f"--http-port={self.http_port}", f"--grpc-port={self.grpc_port}",
                   f"--metrics-port={self.metrics_port}", "--allow-metrics=false", "--exit-timeout-secs=10",
                   "--log-verbose=0"]
        with open(self.log_path, "ab") as log:  # a restart appends to the same log
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BundleError(f"tritonserver exited with code {self.process.returncode} while starting; "
                                  f"its log ({self.log_path}), errors and end:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.http_url}/v2/health/ready", timeout=2) as answer:
                    if answer.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.25)
        self.stop()
        raise BundleError(f"tritonserver was not ready within {self.startup_timeout:.0f} s; its log, errors and end:\n"
                          f"{self.log_tail()}")

    def restart(self) -> "LocalServer":
        """Stop the server (in-flight requests get up to ``--exit-timeout-secs``) and start it on the same ports."""
        self.stop()
        return self.start()

    def rss_bytes(self) -> int:
        """Resident memory of the server and its backend stub processes, in bytes."""
        if self.process is None:
            raise BundleError("the Triton server is not running: no memory to read")
        total = 0
        for pid in _process_tree(self.process.pid):
            try:
                total += int(Path(f"/proc/{pid}/statm").read_text().split()[1])
            except (OSError, IndexError, ValueError):  # a stub that ended meanwhile
                continue
        return total * os.sysconf("SC_PAGE_SIZE")

    def stop(self) -> None:
        """Stop the server and wait (bounded) for its backend stubs to end too; a stub still there is killed."""
        if self.process is not None and self.process.poll() is None:
            stubs = _process_tree(self.process.pid)[1:]
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
            deadline = time.monotonic() + 10
            while stubs and time.monotonic() < deadline:
                stubs = [pid for pid in stubs if _running(pid, str(self.workspace))]
                time.sleep(0.1)
            for pid in stubs:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        self.process = None

    def __enter__(self) -> "LocalServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
        shutil.rmtree(self.workspace, ignore_errors=True)


def serve_forever(repository: Path, python: Path, *, address: str = "127.0.0.1") -> None:
    """``python -m engines serve``: start the server, print its urls, stop it on Ctrl-C."""
    with LocalServer(repository, python, address=address) as server:
        print(f"serving {repository} at {server.http_url} and {server.grpc_url} (log {server.log_path}); Ctrl-C stops")
        try:
            server.process.wait()
        except KeyboardInterrupt:
            pass
