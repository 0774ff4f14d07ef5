-- LTI 1.3 (IMS Security Framework) signs with RS256: allow it beside RS384 and ES384.
ALTER TABLE signing_keys DROP CONSTRAINT IF EXISTS signing_keys_alg_check;
ALTER TABLE signing_keys ADD CONSTRAINT signing_keys_alg_check CHECK (alg IN ('RS256', 'RS384', 'ES384'));
