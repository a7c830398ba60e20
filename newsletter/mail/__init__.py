"""The mail library: rendering primitives, MIME and message building, headers,
transports, DKIM and the retry policy. Features use it; it imports none of them."""
