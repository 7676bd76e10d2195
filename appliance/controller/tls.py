"""The controller's HTTPS listener: server TLS only, no client certificate.

Operators log in with a password from a browser that holds no organisation certificate, so the
listener asks for none. Everything else is the appliance's TLS policy
(:func:`appliance.tls.context.server_context`: NCSC 2025-05, TLS 1.2/1.3, AEAD, ECDHE). The
key is the organisation's HSM key with its certificate by default, or a separate server
certificate (``[controller] certificate_chain`` and ``key_file``; a PEM URI naming an HSM key
keeps that key in the HSM too), e.g. one issued by the organisation's internal CA for the
controller's host name, which the operators' browsers trust.
"""

from __future__ import annotations

import dataclasses
import ssl
from pathlib import Path

from appliance.config import SluisConfig
from appliance.errors import ConfigurationError
from appliance.tls.context import server_context


def controller_server_context(config: SluisConfig) -> ssl.SSLContext:
    tls = config.tls
    settings = config.controller
    if settings is not None and (settings.certificate_chain or settings.key_file):
        if not (settings.certificate_chain and settings.key_file):
            raise ConfigurationError(
                "[controller] certificate_chain and key_file go together (or leave both out to "
                "use the organisation certificate)"
            )
        tls = dataclasses.replace(
            tls,
            certificate_chain=Path(settings.certificate_chain),
            key_reference=Path(settings.key_file),
        )
    ctx = server_context(tls, config.hsm)
    # People log in with a password: no client certificate is asked for.
    ctx.verify_mode = ssl.CERT_NONE
    return ctx
