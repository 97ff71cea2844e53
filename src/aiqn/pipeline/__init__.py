"""What the methods share above the core: the verbs of data, scoring, tables and provenance."""
