"""The data plane: polls the control plane for a deployment's runs and executes its agent.

It talks to the control plane only over HTTP (``runtime.client``) and imports nothing of it. From
``shared`` it imports only ``shared.kernel.jsonlog`` (JSON log lines with secret redaction, so both
planes' logs look and redact alike) and the ``shared.kernel.redaction`` rule it uses, which need
nothing but the standard library. Its third-party
packages are listed in ``byoc/runner-requirements.txt``, the only ones the runner image installs.
"""
