"""What the test modules share besides fixtures: one of each helper.

* ``support.http``: ``RecordingServer``, the loopback HTTP server that records every request
  and answers as the test says (webhook receivers, push targets, Google REST APIs, files).
* ``support.wait``: ``wait_until``, polling a condition with a deadline.
* ``support.wsgi``: ``serve_wsgi``, a WSGI app (the gateway) served over real HTTP on a free
  loopback port for the length of a ``with`` block (the ``live_url`` fixture, the benchmarks).

Stand-ins and fixtures' building blocks, each for one purpose:

* ``support.fake_stripe``: ``FakeStripe``, the part of Stripe's API the platform calls, for the real
  ``stripe`` library; ``support.vector_search``: ``FakeVectorSearch``, Vertex AI Vector Search's
  REST API for the real ``google-cloud-aiplatform`` clients (both on ``RecordingServer``);
* ``support.cli`` (the ``marketplace`` command as tests start it), ``support.client_cli`` (a real
  ``marketplace up`` and the client CLI against it, with their own config folders);
* ``support.packages``: agent package archives, well-formed and each kind of hostile one;
  ``support.hostile_agent``: an agent whose node does the attack its inputs name;
* ``support.secrets``: realistic fake credentials that must never be repeated;
* ``support.chromium``: Debian's Chromium for the browser tests (installed when missing, as root).

A free loopback port is the product's own ``shared.kernel.net.free_port``.

Fixtures live in ``tests/conftest.py``; these are plain functions and classes a test imports.
"""
