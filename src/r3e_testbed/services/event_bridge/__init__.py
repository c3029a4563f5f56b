"""The object-store event bridge: an upload to the data bucket becomes one Airflow asset event.

Run it with ``python -m r3e_testbed.services.event_bridge`` (settings: :class:`app.BridgeSettings`,
from ``R3E_*`` environment variables). No upload is ever lost or delivered twice:

- **SeaweedFS**: the bridge follows the filer's persisted metadata log (:mod:`filer_log`) from a
  checkpoint stored with each event, so after a restart of the bridge, the filer or Airflow it
  replays exactly what it had not handled; the filer's webhook is not used.
- **MinIO**: bucket notifications posted to ``POST /events/minio``, which MinIO queues on disk
  (``queue_dir``) and resends while the bridge is unreachable.
- **Reconcile**: at start, after every reconnect to the filer and every
  ``R3E_EVENT_RECONCILE_SECONDS``, the buckets are listed against what the bridge has seen; an
  object whose content never arrived as an event (a filer killed before it flushed its log, a lost
  queue) is stored then. Objects already there at the bridge's first start are its baseline.

Each object content (bucket, key, ETag) is stored once in SQLite (:mod:`store`) and delivered once
to Airflow (:mod:`delivery`), through the official client. ``GET /health``, ``GET /metrics``
(Prometheus) and the OpenAPI page (``/docs``) are served beside the webhook.
"""
