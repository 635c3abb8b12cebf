"""The processes under test: a private Mosquitto and the mqlink daemon.

Both live in the episode's temporary directory, listen on free loopback ports and are
controlled by signals (SIGSTOP/SIGCONT/SIGKILL/SIGTERM) so the nemesis can pause, kill and
restart them. The broker keeps its port across restarts so the proxy's upstream stays valid.
"""

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request

MOSQUITTO = "/usr/sbin/mosquitto"
LISTENER_OPTIONS = ("max_qos",)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, deadline):
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


class Mosquitto:
    """A private broker. ``limits`` are mosquitto.conf lines (max_packet_size, max_qos,
    retain_available, max_inflight_messages, acl_file) written as global options."""

    def __init__(self, workdir, persistence, limits=(), acl=None):
        self.dir = os.path.join(workdir, "mosquitto")
        os.makedirs(os.path.join(self.dir, "persistence"), exist_ok=True)
        self.persistence = persistence
        self.limits = list(limits)
        self.port = free_port()
        self.log_path = os.path.join(self.dir, "mosquitto.log")
        self.proc = None
        self.paused = False
        if acl is not None:
            path = os.path.join(self.dir, "acl")
            with open(path, "w") as f:
                f.write(acl)
            self.limits.append(f"acl_file {path}")
        self._write_conf()

    def _write_conf(self):
        lines = [
            # As root, Mosquitto drops to user "mosquitto", who cannot write our 0700 dir.
            *(["user root"] if os.geteuid() == 0 else []),
            f"persistence {'true' if self.persistence else 'false'}",
            f"persistence_location {self.dir}/persistence/",
            "autosave_interval 1",
            "max_queued_messages 1000000",
            f"log_dest file {self.log_path}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
            "log_timestamp_format %s",
            *[x for x in self.limits if not x.startswith(LISTENER_OPTIONS)],
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            # Listener options: written before any listener they would open a default one
            # on 1883.
            *[x for x in self.limits if x.startswith(LISTENER_OPTIONS)],
        ]
        with open(os.path.join(self.dir, "mosquitto.conf"), "w") as f:
            f.write("\n".join(lines) + "\n")

    def start(self, timeout=10):
        self.proc = subprocess.Popen(
            [MOSQUITTO, "-c", os.path.join(self.dir, "mosquitto.conf")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.paused = False
        if not wait_port(self.port, time.monotonic() + timeout):
            raise RuntimeError(f"mosquitto did not listen on {self.port}; log: {self.log()[-2000:]}")

    def log(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def pause(self):
        os.kill(self.proc.pid, signal.SIGSTOP)
        self.paused = True

    def resume(self):
        os.kill(self.proc.pid, signal.SIGCONT)
        self.paused = False

    def kill(self):
        if self.paused:
            self.resume()
        self.proc.kill()
        self.proc.wait()

    def stop(self):
        """Graceful stop: SIGTERM (Mosquitto saves its persistence file), SIGKILL after 10 s."""
        if self.proc is None or self.proc.poll() is not None:
            return
        if self.paused:
            self.resume()
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def connections(self, client_id):
        """Protocol levels of ``client_id``'s connections, from the broker's log
        ("New client connected from ... as ID (p5, c1, k5)")."""
        out = []
        for line in self.log().splitlines():
            if f" as {client_id} (" in line and "New client connected" in line:
                p = line.split(f" as {client_id} (", 1)[1].split(",", 1)[0]
                out.append(p)
        return out


class Mqlink:
    """The daemon, started on a generated config; restartable on the same spool and port."""

    def __init__(self, binary, workdir, config_yaml, spool_dir):
        self.binary = binary
        self.dir = workdir
        self.cfg = os.path.join(workdir, "mqlink.yaml")
        with open(self.cfg, "w") as f:
            f.write(config_yaml)
        self.spool_dir = spool_dir
        self.http_port = free_port()
        self.proc = None
        self.incarnation = 0
        self.log_path = os.path.join(workdir, "mqlink.log")
        self.exits = []  # (incarnation, returncode, expected)

    def start(self, wait=True, timeout=30):
        self.incarnation += 1
        log = open(self.log_path, "ab")
        log.write(f"=== campaign: incarnation {self.incarnation}\n".encode())
        log.flush()
        env = dict(os.environ, RUST_LOG=os.environ.get("CAMPAIGN_RUST_LOG", "info"))
        self.proc = subprocess.Popen(
            [self.binary, "run", "-c", self.cfg, "--http-listen",
             f"127.0.0.1:{self.http_port}", "--spool-dir", self.spool_dir],
            stdout=log, stderr=log, env=env)
        log.close()
        if not wait:
            return True
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            if self.get("/healthz")[0] == 200:
                return True
            time.sleep(0.05)
        return False

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def kill(self):
        if self.alive():
            self.proc.kill()
        if self.proc is not None:
            self.proc.wait()
            self.exits.append((self.incarnation, self.proc.returncode, True))

    def stop(self, timeout=15):
        if not self.alive():
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.exits.append((self.incarnation, self.proc.returncode, True))

    def unexpected_exit(self):
        """Return code when the daemon died without the harness killing it."""
        if self.proc is not None and self.proc.poll() is not None:
            if not any(i == self.incarnation for i, _, _ in self.exits):
                return self.proc.returncode
        return None

    def log(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def get(self, path, timeout=2):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}",
                                        timeout=timeout) as r:
                return r.status, r.read().decode(errors="replace")
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode(errors="replace")
        except (OSError, ValueError):
            return None, ""

    def metrics(self):
        """/metrics as {name{labels}: value}; {} when unreachable."""
        status, text = self.get("/metrics")
        out = {}
        if status != 200:
            return out
        for line in text.splitlines():
            if not line or line.startswith("#"):
                continue
            try:
                k, v = line.rsplit(" ", 1)
                out[k] = float(v)
            except ValueError:
                continue
        return out

    def rss_kib(self):
        if not self.alive():
            return None
        try:
            with open(f"/proc/{self.proc.pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1])
        except OSError:
            return None
        return None

    def dead_letters(self):
        """Dead-letter entries (parsed JSON lines)."""
        path = os.path.join(self.spool_dir, "dead-letter.jsonl")
        out = []
        try:
            with open(path, errors="replace") as f:
                for line in f:
                    line = line.strip()
                    if line:
                        try:
                            out.append(json.loads(line))
                        except ValueError:
                            out.append({"unparsable": line})
        except OSError:
            pass
        return out
