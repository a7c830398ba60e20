"""Running it for real: the production check and structured logs."""
