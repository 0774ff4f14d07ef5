-- SAML SP key rollover in two steps (keys rotate --saml-sp --stage signing-only, then
-- --stage promote): what the SP metadata publishes each key's certificate for. 'both'
-- (signing and encryption: every key before this migration, and a one-step rollover's new
-- key), 'signing' (a staged key, announced for AuthnRequest signature checks only, so the
-- metadata keeps one encryption certificate for IdPs that cannot read two), 'none' (a
-- replaced key kept only to decrypt until it retires). Every key not retired decrypts.
ALTER TABLE sso_sp_keys ADD COLUMN published TEXT NOT NULL DEFAULT 'both'
    CHECK (published IN ('both', 'signing', 'none'));
