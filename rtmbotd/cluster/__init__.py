"""Cluster mode (CLUSTER: true): several nodes of one bot coordinating through PostgreSQL."""
