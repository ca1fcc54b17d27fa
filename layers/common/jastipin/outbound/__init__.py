"""What we send: a job's way from its queue to WhatsApp.

- ``jobs``: the queue message bodies (fan-out and chunk jobs), validated on both ends;
- ``queues``: sending jobs to the three queues;
- ``fanout``: a fan-out job becomes chunk jobs of the trip's audience, resumable at any size;
- ``delivery``: a chunk sent recipient by recipient (``Sender``): decide (STOP, window, consent), send under
  the limit with bounded concurrency, retry what is transient, log one outcome each;
- ``rate_limit``: the one global limit across every sender instance and queue;
- ``whatsapp``: the WhatsApp Cloud API client, one choke point for every request."""
