"""Prefect flows that drive the DVC pipeline; they hold no pipeline logic of their own."""
