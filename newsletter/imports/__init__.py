"""CSV import into a list: parse, map, validate, run; checked whole, written whole."""
