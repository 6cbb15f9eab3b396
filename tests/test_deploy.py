"""The shipped reverse-proxy config is valid nginx (skipped where nginx is not installed: the
suite never needs it)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.harness import ROOT

pytestmark = pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed")


def test_the_nginx_config_passes_nginx_t(tmp_path: Path) -> None:
    # The upstream is compose's `api` host, which does not resolve here: point it at loopback.
    conf = (ROOT / "deploy/nginx/rafale.conf").read_text()
    assert "server api:8007;" in conf
    (tmp_path / "logs").mkdir()
    (tmp_path / "rafale.conf").write_text(
        conf.replace("server api:8007;", "server 127.0.0.1:8007;")
        .replace("/var/log/nginx/access.log", str(tmp_path / "logs/access.log")))
    (tmp_path / "nginx.conf").write_text(f"""
pid {tmp_path}/nginx.pid;
error_log {tmp_path}/logs/error.log;
events {{}}
http {{
    client_body_temp_path {tmp_path}/body;
    proxy_temp_path {tmp_path}/proxy;
    include {tmp_path}/rafale.conf;
}}
""")
    proc = subprocess.run(["nginx", "-t", "-c", str(tmp_path / "nginx.conf"), "-p", str(tmp_path)],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert "test is successful" in proc.stderr
