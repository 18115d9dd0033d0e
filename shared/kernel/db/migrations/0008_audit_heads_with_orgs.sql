-- Every org has the head of its audit chain from the moment it exists (seq 0, the genesis hash),
-- so that appending an entry is one statement that never has to look first and can travel with
-- its transaction's commit (shared/services/audit.py). Orgs from before this migration get theirs.
CREATE FUNCTION audit_head_for_new_org() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO audit_heads (org_id, seq, hash) VALUES (NEW.id, 0, repeat('0', 64))
    ON CONFLICT (org_id) DO NOTHING;
    RETURN NEW;
END;
$$;
CREATE TRIGGER orgs_audit_head AFTER INSERT ON orgs
    FOR EACH ROW EXECUTE FUNCTION audit_head_for_new_org();
INSERT INTO audit_heads (org_id, seq, hash)
SELECT id, 0, repeat('0', 64) FROM orgs
ON CONFLICT (org_id) DO NOTHING;
