"""The worker: rounds of outbox mail, campaign deliveries, retention and imports.

It sits above the features and drives them; none of them imports it.
"""
