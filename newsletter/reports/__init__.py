"""Read-only reports for the staff console: dashboard figures and their chart."""
