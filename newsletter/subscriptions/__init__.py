"""Subscriptions: signup, double opt-in, unsubscribe and preferences."""
