"""Operations: what operators use and see.

- ``dlq``: the queues' counts, a DLQ's messages without personal data, redrive and purge (``QueueAdmin``);
- ``outcomes``: a trip's recent notification outcomes;
- ``views``: the models the admin API takes and answers;
- ``observability``: Sentry (PII scrubbed), the metrics breakdown per queue and message type, shared by every
  function."""
