"""fleetscope: monitoring and a verifiable public explorer for decentralised GPU networks.

This package is the shared core: configuration, the database (embedded server,
schema, migrations) and the query layer that owns every definition shown to
users. See ../shared/DESIGN.md.
"""

__version__ = "0.1.0"
