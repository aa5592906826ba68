"""Synthetic demo data (``manage.py seed_demo``).

- ``specs``: the demo's clinics and the weights of its random choices (pure data).
- ``plan``: the planner (pure: no Django, no clock) — patients and pump histories planned
  backwards from the status each pump should have on the reference day.
- ``writers``: the plans recorded through ``pumps.services``.
- ``bulk`` and ``clone``: the demo at scale, most pumps copies of recorded histories made
  by the database (PostgreSQL).

This package imports nothing on its own, so that ``pumps.demo.plan`` can be used without
Django.
"""
