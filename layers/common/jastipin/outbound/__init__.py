"""What we send: a job's way from its queue to WhatsApp.

- ``jobs``: the queue message bodies, one model per kind (fan-out and chunk jobs), validated on both ends;
- ``queues``: sending jobs to the three queues;
- ``fanout``: a fan-out job becomes chunk jobs of the trip's audience, resumable at any size;
- ``delivery``: the sender (``Sender``): fan-out and chunks, with what lives as long as the container;
- ``chunk_send``: one chunk sent recipient by recipient (``ChunkSend``): send under the limit with bounded
  concurrency, retry what is transient;
- ``recipients``: who gets it (STOP, the 24-hour window, consent; replaced user ids followed);
- ``outcomes``: one outcome per recipient, written to the log as it comes;
- ``rate_limit``: the one global limit across every sender instance and queue;
- ``whatsapp``: the WhatsApp Cloud API client, one choke point for every request."""
