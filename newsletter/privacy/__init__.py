"""Data protection (GDPR): erasure, withdrawal on someone's behalf, and issue 5's services."""
