"""Inbound event models. AWS-owned payloads ignore unknown fields."""
