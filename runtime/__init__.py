"""The data plane: polls the control plane for a deployment's runs and executes its agent.

It talks to the control plane only over HTTP (``runtime.client``) and imports nothing of it. From
``shared`` it imports only ``shared.kernel.jsonlog`` (JSON log lines with secret redaction, so both
planes' logs look and redact alike), ``shared.kernel.package_archive`` (issue 14: the one safe
reading of an agent package, the same on both planes), and the ``shared.kernel.errors`` and
``shared.kernel.redaction`` they use, which need nothing but the standard library and PyYAML. Its third-party
packages are listed in ``byoc/runner-requirements.txt``, the only ones the runner image installs.
"""
