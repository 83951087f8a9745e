"""Debian's nginx in front of a central, with the shipped deploy/nginx-central.conf: started on 127.0.0.1 as
its own process under a temporary prefix (config, pid, logs, temporary files), as root or not. A TEST AND
BENCHMARK HELPER, not used in service.
"""
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from tests.support.fake_printer import unused_port

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "deploy" / "nginx-central.conf"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def nginx_available() -> bool:
    return os.path.exists(NGINX)


def render(conf: str, port: int, upstream_port: int, logs: Path) -> str:
    """The shipped server block listening on 127.0.0.1:``port``, its upstream on ``upstream_port``, its logs
    in ``logs``; everything else as shipped."""
    out, n = re.subn(r"^(\s*)listen 80;", rf"\g<1>listen 127.0.0.1:{port};", conf, count=1, flags=re.M)
    assert n == 1, "deploy/nginx-central.conf has no `listen 80;` line"
    out, n = re.subn(r"server 127\.0\.0\.1:8090\b", f"server 127.0.0.1:{upstream_port}", out)
    assert n >= 1, "deploy/nginx-central.conf has no upstream server 127.0.0.1:8090"
    return out.replace("/var/log/nginx/", f"{logs}/")


class Nginx:
    def __init__(self, upstream_port: int, port: int | None = None, worker_processes: int = 1):
        self.upstream_port = upstream_port
        self.port = port or unused_port()
        self.worker_processes = worker_processes
        self.url = f"http://127.0.0.1:{self.port}"
        self.prefix: Path | None = None
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 10) -> "Nginx":
        # Outside pytest's temporary folder (only root may enter it): nginx's workers run as nobody when root.
        self.prefix = Path(tempfile.mkdtemp(prefix="dvc-nginx-"))
        self.prefix.chmod(0o755)
        (self.prefix / "logs").mkdir()
        site = self.prefix / "dvc-central.conf"
        site.write_text(render(CONF.read_text(), self.port, self.upstream_port, self.prefix / "logs"))
        temp = self.prefix / "tmp"
        temp.mkdir()
        main = self.prefix / "nginx.conf"
        main.write_text(
            f"worker_processes {self.worker_processes};\n"
            "worker_rlimit_nofile 16384;\n"
            f"pid {self.prefix}/nginx.pid;\n"
            f"error_log {self.prefix}/logs/error.log warn;\n"
            "events { worker_connections 8192; }\n"
            "http {\n"
            + "".join(f"    {kind}_temp_path {temp}/{kind};\n"
                      for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
            + "    access_log off;\n"
            f"    include {site};\n"
            "}\n")
        command = [NGINX, "-p", str(self.prefix), "-c", str(main), "-e", str(self.prefix / "logs/error.log"),
                   "-g", "daemon off;"]
        check = subprocess.run(command[:-2] + ["-t"], capture_output=True, text=True)
        if check.returncode != 0:
            raise RuntimeError(f"nginx -t: {check.stderr[-2000:]}")
        self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited: {self.error_log()[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("nginx did not start listening")

    def pids(self) -> list[int]:
        """The master's pid and its workers'."""
        if self.proc is None:
            return []
        return [self.proc.pid] + children(self.proc.pid)

    def access_log(self) -> list[str]:
        path = self.prefix / "logs" / "dvc-central.access.log"
        return path.read_text().splitlines() if path.exists() else []

    def error_log(self) -> str:
        text = ""
        for name in ("error.log", "dvc-central.error.log"):
            path = self.prefix / "logs" / name
            if path.exists():
                text += path.read_text()
        return text

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGQUIT)  # graceful: finish what is under way
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        self.proc = None
        if self.prefix is not None:
            shutil.rmtree(self.prefix, ignore_errors=True)
            self.prefix = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def children(pid: int) -> list[int]:
    """The pids of a process's children (Linux: /proc/PID/task/*/children)."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(p) for p in (task / "children").read_text().split()]
        except (OSError, ValueError):
            pass
    return found
