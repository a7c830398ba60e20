"""CSV import into a list: parse, map, validate, run (issue 4, point 7)."""
