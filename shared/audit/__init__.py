"""The audit context's public API: other contexts, operations and the data plane import from here only."""

from shared.audit.service import AuditLog

__all__ = ["AuditLog"]
