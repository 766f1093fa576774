"""Benchmarks of flask-notifications against flask-sse and a raw gevent fan-out.

Run ``python -m bench`` (or ``bench/run.sh``) from the repository root; ``--quick``
makes a smoke run. ``--only per-user,nchan,many-streams,many-hubs`` runs the scale
scenarios of :mod:`bench.per_user` instead. Nothing here is part of the test suite.
"""
