-- expect: scan public.audit_2024
ALTER TABLE audit ATTACH PARTITION audit_2024 FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
