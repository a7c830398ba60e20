"""Staff accounts: passwords, two-factor codes, roles and the audit trail."""
