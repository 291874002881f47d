-- expect: safe
-- audit_2025's CHECK matches the bound: PostgreSQL skips the scan.
ALTER TABLE audit ATTACH PARTITION audit_2025 FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
