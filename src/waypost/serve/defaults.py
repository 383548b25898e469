"""The serving defaults, in one place (no imports: the CLI reads them at start-up)."""
MAX_BATCH_SIZE = 64  # rows per model call in the dynamic batcher
MAX_LATENCY_MS = 5.0  # longest wait to fill a batch
QUEUE_SIZE = 1024  # requests waiting at most; beyond it 503 + Retry-After
MAX_BODY_BYTES = 1_000_000  # larger request bodies get 413
# A request whose rows have not reached the model this long after it arrived gets 503 + Retry-After
# (0 turns the deadline off). Below httpx's 5 s default client timeout, about 3x what draining a
# full default queue of single rows takes on the benchmark model: no request on a healthy server
# meets it, and under a flood latency stays bounded by it instead of growing with the backlog.
TIMEOUT_MS = 2000.0
# An image declaring more pixels than this is refused from its header, before decoding: 4096 x 4096
# (a 12 MP phone photo is 4032 x 3024; a 1 MB body rarely holds more). Decoding it as RGB takes 48 MiB.
MAX_IMAGE_PIXELS = 4096 * 4096
