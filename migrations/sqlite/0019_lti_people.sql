-- One person across LTI versions (src/lti/people.rs): every platform identity a launch came
-- with -- a 1.3 `sub` under its issuer, a 1.1 `user_id` under its consumer key -- and the
-- person it belongs to. A verified LTI 1.1 migration claim puts a learner's 1.3 identity
-- beside their 1.1 one, so both launch as one person and the ledger counts them once.
CREATE TABLE lti_identities (
    partner_id     TEXT NOT NULL REFERENCES partners (id),
    -- 'lti13 <issuer>' or 'lti11 <consumer key>'
    namespace      TEXT NOT NULL,
    user_id        TEXT NOT NULL,
    person_id      TEXT NOT NULL,
    created_at_us  BIGINT NOT NULL,
    -- When a migration claim last moved this identity to another person (NULL: never).
    relinked_at_us BIGINT,
    PRIMARY KEY (partner_id, namespace, user_id)
);
CREATE INDEX lti_identities_person ON lti_identities (partner_id, person_id);

-- The newest launch of each person in each resource link (the LTI 1.1 link id for a
-- migrated link, which both versions name): a score the app posts on an older launch of
-- the link goes through this one, so one learner's grade for one link is sent one way.
CREATE TABLE lti_person_links (
    partner_id     TEXT NOT NULL REFERENCES partners (id),
    person_id      TEXT NOT NULL,
    link_key       TEXT NOT NULL,
    launch_id      TEXT NOT NULL,
    launched_at_us BIGINT NOT NULL,
    PRIMARY KEY (partner_id, person_id, link_key)
);

-- The launch the app posted a score on, when the score went through another (newer) launch
-- of the same person and link.
ALTER TABLE lti_scores ADD COLUMN posted_launch_id TEXT;

-- Dynamic Registration: the LTI 1.1 consumer a registration link's platform replaces (one of
-- the partner's configured consumers, whose secret verifies the migration claim), carried
-- from the link to the registration it makes.
ALTER TABLE lti_registration_links ADD COLUMN lti11_consumer_key TEXT;
ALTER TABLE lti_platforms ADD COLUMN lti11_consumer_key TEXT;
