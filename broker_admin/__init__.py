"""Operator-side broker administration: the identity registry with its password file and ACL
(``credstore``), the TLS files of a state directory (``tlsca``) and the certificates in them
(``certs``), the Mosquitto profiles of ``broker_config/`` (``profiles``) and where the Mosquitto
binaries are (``mosquitto``).

Nothing here is installed on a device's code path: clients load their credentials with
``runtime.credentials`` and never import this package (the import contract in pyproject.toml
holds it).
"""
