"""The serving defaults, in one place (no imports: the CLI reads them at start-up)."""
MAX_BATCH_SIZE = 64  # rows per model call in the dynamic batcher
MAX_LATENCY_MS = 5.0  # longest wait to fill a batch
QUEUE_SIZE = 1024  # requests waiting at most; beyond it 503 + Retry-After
MAX_BODY_BYTES = 1_000_000  # larger request bodies get 413
