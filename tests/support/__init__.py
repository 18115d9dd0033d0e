"""What the test modules share besides fixtures: one of each helper.

* ``support.http``: ``RecordingServer``, the loopback HTTP server that records every request
  and answers as the test says (webhook receivers, push targets, Google REST APIs, files).
* ``support.net``: ``free_port``, a loopback port nothing listens on.
* ``support.wait``: ``wait_until``, polling a condition with a deadline.

Fixtures live in ``tests/conftest.py``; these are plain functions and classes a test imports.
"""
