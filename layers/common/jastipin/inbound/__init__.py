"""What participants say to us over WhatsApp, and what WhatsApp says about our messages.

- ``payload``: Meta's webhook payload, read leniently (a malformed item is dropped, the rest kept), and its
  signature;
- ``intake``: the webhook's part: preferences applied at once, messages and statuses queued
  (``queued``: the two bodies of the inbound queue);
- ``processor``: the inbound function's part: each message handled once (``handler`` runs the command,
  ``commands`` parses it, ``identity`` says who wrote), each status applied (``statuses``);
- ``preferences``: marketing stop / resume.

Replies are queued on the notifications queue; nothing here calls the WhatsApp API."""
