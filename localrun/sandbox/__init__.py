"""Local WhatsApp Cloud API sandbox.

A small HTTP server (stdlib ``ThreadingHTTPServer`` on 127.0.0.1) that speaks the part of Meta's WhatsApp
Cloud API (Graph API v23.0) that Jastipin uses, so the whole system can be run and tested with no internet:

* ``POST /{version}/{phone_number_id}/messages`` -- checks the bearer token, the phone number id and the
  request body (text, template, image, document, interactive and reaction messages, plus "mark as read"
  requests), records accepted messages and answers like Meta does (``contacts`` + ``messages[].id``).
  Errors use the Graph error body (``{"error": {"message", "type", "code", "fbtrace_id", ...}}``).
* Faults (rate limits, server errors, slow answers, dropped connections, numbers that fail after being
  accepted) can be injected per recipient, for a number of requests or forever, to test retries.
* It sends Meta-format webhooks to our webhook: inbound user messages (``send_inbound``) and message status
  callbacks (``send_status``, and automatically "sent" then "delivered" after each accepted message when
  ``status_callbacks=True``), signed with ``X-Hub-Signature-256`` like Meta signs them.
* Control routes under ``/_sandbox/`` (messages, refused sends, faults, inbound, status, health) for other
  processes.

Each accepted or refused send is recorded with ``received_at``: when the request's first bytes reached the
sandbox's socket (the kernel's receive timestamp, ``SO_TIMESTAMPNS``, where Linux gives it), as Meta's front
door would time it, and not when a sandbox thread got round to reading it. The sandbox shares a process with
the local runtime, whose load delayed that by up to ~50 ms, enough to make on-time sends look crowded into
one second on the record that the rate-limit tests read.

Faults (``add_fault`` / ``POST /_sandbox/faults``) are dicts with the keys ``to`` (recipient or null = any),
``times`` (uses, null = forever), ``http_status``, ``code``, ``message``, ``latency_ms`` and ``timeout``.
The first fault matching a /messages request (and with uses left) decides its fate:

* ``timeout: true`` -- hold the request for ``latency_ms`` (default 10 s), then close the connection
  without answering.
* ``http_status`` 4xx/5xx -- answer that status with a Graph error (``code``, default 131000).
* otherwise the message is accepted (after the fault's ``latency_ms``, if given, instead of the sandbox's);
  with a ``code`` (e.g. 131026 for an unknown number) its status callback is "failed" with that code
  instead of "sent" + "delivered", as Meta does for numbers it cannot deliver to.

Typical use::

    with WhatsAppSandbox(access_token="t", phone_number_id="123", app_secret="s",
                         webhook_url="http://127.0.0.1:3000/webhook") as sandbox:
        ...  # point the sender at sandbox.url
        assert sandbox.messages(to="6281234567890")

The package, one concept a module: ``core`` (the ``WhatsAppSandbox`` class: lifecycle, records, routes and the
webhooks it posts), ``server`` (the HTTP plumbing), ``graph_validation`` (request bodies), ``graph_errors``
(Graph error bodies and codes), ``faults`` (checking and matching them) and ``webhooks`` (Meta's envelope, its
signature and the signed POST).
"""

from __future__ import annotations

from localrun.sandbox.core import WhatsAppSandbox
from localrun.sandbox.graph_errors import GraphError
from localrun.sandbox.webhooks import sign, webhook_envelope

__all__ = ["GraphError", "WhatsAppSandbox", "sign", "webhook_envelope"]
