"""What the test modules share besides fixtures: one of each helper.

* ``support.http``: ``RecordingServer``, the loopback HTTP server that records every request
  and answers as the test says (webhook receivers, push targets, Google REST APIs, files).
* ``support.wait``: ``wait_until``, polling a condition with a deadline.
* ``support.wsgi``: ``serve_wsgi``, a WSGI app (the gateway) served over real HTTP on a free
  loopback port for the length of a ``with`` block (the ``live_url`` fixture, the benchmarks).

A free loopback port is the product's own ``shared.kernel.net.free_port``.

Fixtures live in ``tests/conftest.py``; these are plain functions and classes a test imports.
"""
