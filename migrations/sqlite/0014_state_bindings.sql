-- SMART and SSO sign-in states keep the SHA-256 of the browser binding (the secret in the
-- cookie set when the sign-in started), so the spending UPDATE itself checks that the
-- answer came back through that browser: a wrong browser is refused without spending the
-- state of the right one. (lti_states has had its binding_hash since 0005.) States written
-- before this migration have none and are refused as bound to another browser; they
-- expire within minutes.
ALTER TABLE smart_states ADD COLUMN binding_hash TEXT;
ALTER TABLE sso_states ADD COLUMN binding_hash TEXT;
