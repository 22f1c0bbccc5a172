"""Application services: one domain decision, carried out through the ports."""
