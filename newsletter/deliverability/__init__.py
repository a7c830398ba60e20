"""The deliverability loop: bounces and complaints, from any source, acted on once."""
