"""``sluis serve controller``: the controller's worker class and default bind."""

from __future__ import annotations

from pathlib import Path

from appliance.cli.serve import COMPONENTS, _default_bind
from appliance.controller.serving import WORKER_CLASS, controller_command
from appliance.serving.launch import ServeOptions

CONFIG = """
[hsm]
token_label = "t"
softhsm_conf = "/etc/sluis/softhsm2.conf"

[tls]
certificate_chain = "/c.pem"
key_reference = "/k.pem"
trust_anchors = "/a.pem"
crls = "/crl.pem"
openssl_conf = "/etc/sluis/openssl.cnf"

[controller]
bind = "10.1.2.3:9443"
"""


def test_the_controller_runs_with_its_own_worker(tmp_path: Path) -> None:
    config = tmp_path / "sluis.toml"
    config.write_text(CONFIG)
    assert COMPONENTS["controller"] == "appliance.controller.app:create_app()"
    assert _default_bind("controller", config) == "10.1.2.3:9443"
    argv, env = controller_command(
        ServeOptions(config=config, app=COMPONENTS["controller"], bind="10.1.2.3:9443", workers=2),
        {"PATH": "/usr/bin"},
    )
    # Sluis' gunicorn entry (its master reloads side by side), as for every component.
    assert argv[1:3] == ["-m", "appliance.serving.gunicorn_main"]
    # After the shared configuration file, before the app: the command line wins.
    assert argv[-3:] == ["--worker-class", WORKER_CLASS, COMPONENTS["controller"]]
    assert argv.index("-c") < argv.index("--worker-class")
    assert env["OPENSSL_CONF"] == "/etc/sluis/openssl.cnf"
    assert env["SOFTHSM2_CONF"] == "/etc/sluis/softhsm2.conf"
    assert env["SLUIS_LISTENER"] == "mtls"  # TLS; the worker asks no client certificate
