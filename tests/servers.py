"""Real outside programs for the tests: PostgreSQL and unleash-server 6.x on 127.0.0.1, Chromium, and
Prometheus (with promtool).

`python -m tests.servers install` provisions them all (.ci/run calls it); the tests
provision on first use as well, so `python -m pytest` also works on a fresh machine.
Each test session gets its own PostgreSQL cluster in a scratch folder, on a free port:
password authentication over TCP, as a real server has it, and trust on its own socket
for the tests' administration.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from tests.helpers import free_port

UNLEASH_VERSION = "6.6.0"  # 7.x and 8.x need Node 22; 6.x runs on Node 18-20
UNLEASH_DIR = Path(os.environ.get("STRANGLER_UNLEASH_DIR") or
                   Path.home() / ".cache" / "strangler-proxy" / f"unleash-server-{UNLEASH_VERSION}")
START_UNLEASH = """
const unleash = require('unleash-server');
unleash.start({
  db: {user: 'unleash', password: 'unleash', host: '127.0.0.1', port: Number(process.env.PG_PORT),
       database: 'unleash', ssl: false},
  server: {port: Number(process.env.UNLEASH_PORT), host: '127.0.0.1'},
  authentication: {type: 'none'},
  versionCheck: {enable: false},
  telemetry: false,
  logLevel: 'warn',
}).then(() => console.log('UNLEASH READY'));
"""


CHROMIUM = "/usr/bin/chromium"


def install() -> None:
    """Everything below, unless already there."""
    install_chromium()
    install_unleash()
    install_prometheus()
    install_systemd_analyze()


def install_systemd_analyze() -> str:
    """systemd-analyze (Debian's `systemd`), which checks the ops kit's unit: it only reads files, so it
    runs in a container without systemd running."""
    if shutil.which("systemd-analyze") is None:
        apt_install("systemd")
    return shutil.which("systemd-analyze") or "systemd-analyze"


def install_chromium() -> str:
    """Debian's Chromium, for the report's browser test (Playwright drives it; it downloads none)."""
    if not Path(CHROMIUM).exists():
        apt_install("chromium")
    return CHROMIUM


def install_prometheus() -> None:
    """Debian's Prometheus, which brings promtool (the ops kit's tests: tests/test_ops.py)."""
    if shutil.which("prometheus") is None or shutil.which("promtool") is None:
        apt_install("prometheus")


def install_postgres() -> None:
    """PostgreSQL (Debian's package)."""
    if _pg_bin() is None:
        apt_install("postgresql")


def install_unleash() -> None:
    """PostgreSQL (Debian's package) and unleash-server (npm)."""
    install_postgres()
    if shutil.which("node") is None:
        apt_install("nodejs", "npm")
    if not (UNLEASH_DIR / "node_modules" / "unleash-server").is_dir():
        UNLEASH_DIR.mkdir(parents=True, exist_ok=True)
        print(f"installing unleash-server {UNLEASH_VERSION} into {UNLEASH_DIR} (about a minute)", flush=True)
        subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--loglevel=error",
                        f"unleash-server@{UNLEASH_VERSION}"], cwd=UNLEASH_DIR, check=True)


def stop_process(proc: subprocess.Popen | None) -> None:
    """SIGTERM a server this test run started, then SIGKILL it if it has not gone within 20 s."""
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def apt_install(*packages: str) -> None:
    if os.geteuid() != 0:
        raise RuntimeError(f"the tests need {', '.join(packages)}: apt-get install them (or run .ci/run)")
    subprocess.run(["apt-get", "update", "-q"], check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["apt-get", "install", "-y", "-q", *packages], check=True, stdout=subprocess.DEVNULL,
                   env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})


def _pg_bin() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    return found[-1].parent if found else None


class Postgres:
    """A throwaway PostgreSQL cluster with an `unleash` database."""

    def __init__(self) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="strangler-pg-"))
        self.base.chmod(0o755)  # the postgres user must reach it when we run as root
        self.port = free_port()
        self._as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    def start(self) -> None:
        bin_dir = _pg_bin()
        assert bin_dir is not None, "PostgreSQL is not installed: python -m tests.servers install"
        data = self.base / "data"
        data.mkdir()
        if self._as:
            shutil.chown(data, "postgres")
            shutil.chown(self.base, "postgres")
        self._run(bin_dir / "initdb", "-D", str(data), "-U", "postgres", "--auth-local=trust",
                  "--auth-host=scram-sha-256", "-E", "UTF8")
        self.resume()
        self.psql("CREATE USER unleash WITH PASSWORD 'unleash'", "CREATE DATABASE unleash OWNER unleash")

    def resume(self) -> None:
        """Start the server (again, after halt), on the same port and data."""
        self._run(_pg_bin() / "pg_ctl", "-D", str(self.base / "data"), "-l", str(self.base / "postgres.log"), "-w",
                  "start", "-o", f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 -c fsync=off")

    def halt(self) -> None:
        """Stop the server as an outage would (fast: connections are cut), keeping its data."""
        self._run(_pg_bin() / "pg_ctl", "-D", str(self.base / "data"), "-m", "fast", "-w", "stop")

    def stop(self) -> None:
        if _pg_bin() is not None and (self.base / "data" / "postmaster.pid").exists():
            self.halt()
        shutil.rmtree(self.base, ignore_errors=True)

    def psql(self, *statements: str, database: str = "postgres") -> str:
        """Run SQL as the superuser, over the cluster's own socket; what it printed (unaligned, no headers)."""
        command = [_pg_bin() / "psql", "-h", self.base, "-p", self.port, "-U", "postgres", "-d", database,
                   "-v", "ON_ERROR_STOP=1", "-At"]
        return self._run(*command, *[arg for sql in statements for arg in ("-c", sql)])

    def serve_tls(self, cert: Path, key: Path) -> None:
        """Accept TLS from now on with this pair (a reload is enough: ssl is a reloadable setting)."""
        for name, source in (("server.crt", cert), ("server.key", key)):
            target = self.base / "data" / name
            shutil.copyfile(source, target)
            target.chmod(0o600)  # PostgreSQL refuses a key others may read
            if self._as:
                shutil.chown(target, "postgres")
        self.psql("ALTER SYSTEM SET ssl = on", "SELECT pg_reload_conf()")

    def url(self, user: str, database: str) -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/{database}"

    def dump(self, database: str) -> str:
        """pg_dump of a whole database, as text."""
        return self._run(_pg_bin() / "pg_dump", "-h", self.base, "-p", self.port, "-U", "postgres", database)

    def _run(self, *command: Any) -> str:
        return subprocess.run([*self._as, *map(str, command)], check=True, capture_output=True, timeout=120,
                              text=True).stdout


class Unleash:
    """unleash-server on a free port, with the admin API calls the tests use."""

    def __init__(self, postgres: Postgres) -> None:
        self.postgres = postgres
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.api_url = self.url + "/api"
        self.log = postgres.base / "unleash.log"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 120) -> None:
        with open(self.log, "ab") as log:
            self._proc = subprocess.Popen(["node", "-e", START_UNLEASH], cwd=UNLEASH_DIR, stdout=log,
                                          stderr=subprocess.STDOUT,
                                          env={**os.environ, "PG_PORT": str(self.postgres.port),
                                               "UNLEASH_PORT": str(self.port)})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"unleash-server exited:\n{self.log.read_text()[-3000:]}")
            try:
                if self.call("GET", "/health").get("health") == "GOOD":
                    return
            except (OSError, ValueError):
                pass
            time.sleep(0.5)
        raise RuntimeError(f"unleash-server did not become healthy:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        stop_process(self._proc)

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            text = response.read()
        return json.loads(text) if text.strip() else {}

    def client_token(self, environment: str = "development") -> str:
        return self.call("POST", "/api/admin/api-tokens", {
            "type": "client", "environment": environment, "projects": ["*"], "tokenName": "strangler-tests"})["secret"]

    def rollout(self, feature: str, percent: int, environment: str = "development") -> None:
        """Create `feature` with one flexibleRollout on userId, switched on."""
        base = "/api/admin/projects/default/features"
        self.call("POST", base, {"name": feature, "type": "release"})
        self.call("POST", f"{base}/{feature}/environments/{environment}/strategies", {
            "name": "flexibleRollout",
            "parameters": {"rollout": str(percent), "stickiness": "userId", "groupId": feature}})
        self.switch(feature, True, environment)

    def switch(self, feature: str, on: bool, environment: str = "development") -> None:
        self.call("POST", f"/api/admin/projects/default/features/{feature}/environments/{environment}/"
                          f"{'on' if on else 'off'}")


class Prometheus:
    """A Prometheus server on 127.0.0.1 and a free port, in a scratch folder, scraping `targets` (HOST:PORT of
    /metrics) every second and evaluating `rule_files` as often."""

    def __init__(self, base: Path, targets: list[str], rule_files: list[Path]) -> None:
        self.base = base
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = base / "prometheus.log"
        self._proc: subprocess.Popen[bytes] | None = None
        base.mkdir(parents=True, exist_ok=True)
        (base / "prometheus.yml").write_text(json.dumps({  # JSON is YAML
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(path) for path in rule_files],
            "scrape_configs": [{"job_name": "strangler", "static_configs": [{"targets": targets}]}]}))

    def start(self, timeout: float = 60) -> None:
        with open(self.log, "ab") as log:
            self._proc = subprocess.Popen(
                ["prometheus", f"--config.file={self.base / 'prometheus.yml'}",
                 f"--storage.tsdb.path={self.base / 'data'}", f"--web.listen-address=127.0.0.1:{self.port}",
                 "--log.level=warn"], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"prometheus exited:\n{self.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"prometheus did not become ready:\n{self.log.read_text()[-3000:]}")

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The samples of an instant query at this moment (/api/v1/query): each {"metric": labels, "value": ...}."""
        url = f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
        with urllib.request.urlopen(url, timeout=10) as response:
            answer = json.load(response)
        assert answer["status"] == "success", answer
        return answer["data"]["result"]

    def alerts(self) -> list[dict[str, Any]]:
        """The alerts pending or firing (/api/v1/alerts)."""
        with urllib.request.urlopen(self.url + "/api/v1/alerts", timeout=10) as response:
            return json.load(response)["data"]["alerts"]

    def stop(self) -> None:
        stop_process(self._proc)


if __name__ == "__main__":
    if sys.argv[1:] != ["install"]:
        raise SystemExit("usage: python -m tests.servers install")
    install()
