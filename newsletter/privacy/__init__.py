"""Data protection (GDPR): erasure, withdrawal on someone's behalf, a person's data export,
privacy-policy versions, retention and the record of processing."""
