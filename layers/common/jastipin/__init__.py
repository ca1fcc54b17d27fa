"""Jastipin messaging: the shared package used by every Lambda function, the local runtime and the tests.

Layers, from the outside in: handlers (functions/*/app.py) → domain logic (trips, inbound, delivery, ...) →
data access (tables, queues, whatsapp). Nothing in here knows about Lambda events except `http` helpers.
"""
