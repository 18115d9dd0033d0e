"""The audit context's public API: other contexts, operations and the data plane import from here only."""

from shared.audit.models import AuditEntry, VerifyOut
from shared.audit.service import AuditLog

__all__ = ["AuditEntry", "AuditLog", "VerifyOut"]
