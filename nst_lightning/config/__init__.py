"""The configuration: the structured configs (schema and defaults), their checks, and run records."""
