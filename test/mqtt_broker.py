"""A real mosquitto broker for tests and benchmarks: free loopback port, optional TLS / mutual TLS, persistence,
and stop (SIGTERM), kill (SIGKILL) and restart on the same port. Certificates are made at test time with
openssl in a temporary directory (no private key is ever committed).
"""

from __future__ import annotations

import getpass
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _ca(cwd: Path, name: str) -> None:
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", "2", "-subj", f"/CN={name}", cwd=cwd)


def _leaf(cwd: Path, name: str, ca: str, server: bool) -> None:
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=cwd)
    ext = cwd / f"{name}.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n" if server else "extendedKeyUsage=clientAuth\n")
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key", "-CAcreateserial",
             "-out", f"{name}.crt", "-days", "2", "-extfile", ext.name, cwd=cwd)


def make_pki(directory: Path) -> dict[str, str]:
    """CA, server and client certificates, plus a rogue CA and a client certificate it signed.

    Returns paths by name: ca, server_cert, server_key, client_cert, client_key, rogue_ca,
    rogue_client_cert, rogue_client_key.
    """
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    _ca(d, "ca")
    _leaf(d, "server", "ca", server=True)
    _leaf(d, "client", "ca", server=False)
    _ca(d, "rogue_ca")
    _leaf(d, "rogue_client", "rogue_ca", server=False)
    p = {k: str(d / v) for k, v in {
        "ca": "ca.crt", "server_cert": "server.crt", "server_key": "server.key",
        "client_cert": "client.crt", "client_key": "client.key", "rogue_ca": "rogue_ca.crt",
        "rogue_client_cert": "rogue_client.crt", "rogue_client_key": "rogue_client.key",
    }.items()}
    return p


def dated_client_cert(directory: Path, name: str, start: str, end: str) -> tuple[str, str]:
    """A client certificate signed by :func:`make_pki`'s CA, valid only from ``start`` to ``end``
    (``YYYYMMDDHHMMSSZ``): for not-yet-valid and expired certificates. Returns (cert, key) paths."""
    d = Path(directory)
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=d)
    (d / f"{name}.db").write_text("")
    (d / f"{name}.cnf").write_text(
        f"[ca]\ndefault_ca = dated\n[dated]\ndatabase = {name}.db\nnew_certs_dir = .\nserial = {name}.srl\n"
        "default_md = sha256\npolicy = any\nunique_subject = no\n[any]\ncommonName = supplied\n"
        "[ext]\nextendedKeyUsage = clientAuth\n")
    (d / f"{name}.srl").write_text("1000\n")
    _openssl("ca", "-batch", "-notext", "-config", f"{name}.cnf", "-cert", "ca.crt", "-keyfile", "ca.key",
             "-in", f"{name}.csr", "-out", f"{name}.crt", "-startdate", start, "-enddate", end,
             "-extensions", "ext", cwd=d)
    return str(d / f"{name}.crt"), str(d / f"{name}.key")


class MosquittoBroker:
    """One mosquitto process on 127.0.0.1:``port``. TLS when ``pki`` is given; mutual TLS with ``require_cert``."""

    def __init__(self, workdir: Path, *, pki: dict[str, str] | None = None, require_cert: bool = False,
                 persistence: bool = True) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.log_path = self.workdir / "mosquitto.log"
        lines = [
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            f"log_dest file {self.log_path}",
            "log_type error", "log_type warning", "log_type notice",
            "max_queued_messages 100000",
            # as root mosquitto drops to user "mosquitto", which cannot read pytest's private temp dirs
            f"user {getpass.getuser()}",
        ]
        if persistence:
            lines += ["persistence true", f"persistence_location {self.workdir}/", "autosave_interval 1"]
        if pki:
            lines += [f"cafile {pki['ca']}", f"certfile {pki['server_cert']}", f"keyfile {pki['server_key']}"]
            if require_cert:
                lines += ["require_certificate true"]
        self.conf = self.workdir / "mosquitto.conf"
        self.conf.write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen | None = None

    def start(self, timeout_s: float = 20.0) -> MosquittoBroker:
        """Start (or restart) on the same port and wait until it accepts connections."""
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited with {self.proc.returncode}: {self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.05)  # polling a port with a deadline: there is no event to wait on
        raise RuntimeError(f"mosquitto did not listen on {self.port} within {timeout_s} s: {self.log()}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop it (SIGTERM saves persistence; SIGKILL does not) and wait for the port to close."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        """SIGKILL, no goodbye."""
        self.stop(signal.SIGKILL)

    def restart(self) -> None:
        """Stop and start again on the same port."""
        self.stop()
        self.start()

    def log(self) -> str:
        """The broker's log so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def __enter__(self) -> MosquittoBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
