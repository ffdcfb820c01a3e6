"""The public explorer: Dash pages and the read-only JSON API (DESIGN.md, Contract)."""
