"""The operators' controller: REST API and web UI on the internal network.

``sluis serve controller`` runs it under gunicorn (HTTPS, people log in).


- :mod:`~appliance.controller.roles`: the four roles and what each may do;
- :mod:`~appliance.controller.passwords`: scrypt password hashes;
- :mod:`~appliance.controller.store`: users, sessions, API tokens and the append-only audit log
  (SQLite or PostgreSQL, Alembic migrations of its own);
- :mod:`~appliance.controller.auth`: login with lockout, sessions, CSRF tokens, API tokens;
- :mod:`~appliance.controller.views`: services, contracts and the authorisation overview, read
  from (and signed through) the Manager;
- :mod:`~appliance.controller.transactions`, :mod:`~appliance.controller.certificates`,
  :mod:`~appliance.controller.health`: the transaction log, certificate status, probes;
- :mod:`~appliance.controller.api` (``/api/v1``, ``openapi.yaml``) and
  :mod:`~appliance.controller.web` (server-rendered pages) on the same data;
- :mod:`~appliance.controller.app`: the Falcon app and its gunicorn factory.
"""
