"""Numbers every part of the engine agrees on (kept here so that no part imports one above it)."""

# The judged text after the cursor: its next lines, this many tokens at most. A document's KV cache keeps
# room for them beyond the context (decoding.fitting scores answers with them; loading sizes caches).
MAX_SUFFIX_TOKENS = 48
