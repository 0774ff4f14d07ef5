-- After an early refresh fails (the EHR's token endpoint is down, or refuses the refresh
-- token while the access token is still valid), the launch keeps using its current access
-- token and no instance tries another early refresh before this time (so a down token
-- endpoint is not asked again on every call of the refresh window). A refresh that is due
-- (the token expired, or the EHR answered 401) does not wait for it. A successful refresh
-- clears it. Sessions written before this migration have none: nothing to wait for.
ALTER TABLE smart_sessions ADD COLUMN refresh_retry_after_us BIGINT;
