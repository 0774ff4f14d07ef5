//! `keys rotate`: new signing keys, the old ones kept in the JWKS for the overlap; the SAML
//! SP key in one step or two (`--stage signing-only`, then `--stage promote`).

use crate::support::{Backend, TestEnv, on_both_backends};

on_both_backends!(keys_rotate_adds_keys_and_keeps_the_old_ones_published
    => keys_rotate_adds_keys_and_keeps_the_old_ones_published_on_sqlite,
       keys_rotate_adds_keys_and_keeps_the_old_ones_published_on_postgres);

async fn keys_rotate_adds_keys_and_keeps_the_old_ones_published(backend: Backend) {
    let Some(env) = TestEnv::new(backend).await else {
        return;
    };
    let both = env.run(&["keys", "rotate"]).await;
    assert!(both.status.success(), "{both}");
    assert_eq!(
        both.stdout_lines().len(),
        3,
        "one new key id per algorithm\n{both}"
    );
    // The master key file was created beside the config, readable by its owner only.
    let key_file = env.dir.path().join("data/master.key");
    assert!(key_file.exists());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let one = env.run(&["keys", "rotate", "--alg", "RS384"]).await;
    assert!(one.status.success(), "{one}");
    assert_eq!(one.stdout_lines().len(), 1, "{one}");
    let store = env.store().await;
    // Three from the first start, three from the first rotation, one from the second.
    assert_eq!(store.scalar("SELECT COUNT(*) FROM signing_keys").await, 7);
    assert_eq!(
        store
            .scalar("SELECT COUNT(*) FROM signing_keys WHERE retire_at_us IS NULL")
            .await,
        3
    );
    let bad = env.run(&["keys", "rotate", "--alg", "HS256"]).await;
    assert!(!bad.status.success(), "{bad}");
    assert!(bad.stderr.contains("RS384 or ES384"), "{bad}");
}

on_both_backends!(keys_rotate_saml_sp_adds_a_key_and_prints_its_id
    => keys_rotate_saml_sp_adds_a_key_and_prints_its_id_on_sqlite,
       keys_rotate_saml_sp_adds_a_key_and_prints_its_id_on_postgres);

async fn keys_rotate_saml_sp_adds_a_key_and_prints_its_id(backend: Backend) {
    let Some(env) = TestEnv::new(backend).await else {
        return;
    };
    let first = env.run(&["keys", "rotate", "--saml-sp"]).await;
    assert!(first.status.success(), "{first}");
    let second = env.run(&["keys", "rotate", "--saml-sp"]).await;
    assert!(second.status.success(), "{second}");
    let (a, b) = (first.stdout_lines(), second.stdout_lines());
    assert_eq!((a.len(), b.len()), (1, 1), "{first}\n{second}");
    assert_ne!(a[0], b[0]);
    assert!(second.stderr.contains("SP metadata"), "{second}");
    // Not both kinds at once.
    let both = env
        .run(&["keys", "rotate", "--saml-sp", "--alg", "RS256"])
        .await;
    assert!(!both.status.success());
}

on_both_backends!(keys_rotate_saml_sp_in_two_stages_keeps_one_encryption_certificate
    => keys_rotate_saml_sp_in_two_stages_keeps_one_encryption_certificate_on_sqlite,
       keys_rotate_saml_sp_in_two_stages_keeps_one_encryption_certificate_on_postgres);

async fn keys_rotate_saml_sp_in_two_stages_keeps_one_encryption_certificate(backend: Backend) {
    let Some(env) = TestEnv::new(backend).await else {
        return;
    };
    // No SP key yet (none is made before SP metadata is first served): nothing to stage.
    let early = env
        .run(&["keys", "rotate", "--saml-sp", "--stage", "signing-only"])
        .await;
    assert!(!early.status.success(), "{early}");
    assert!(early.stderr.contains("no SAML SP key yet"), "{early}");
    let first = env.run(&["keys", "rotate", "--saml-sp"]).await;
    assert!(first.status.success(), "{first}");
    // Stage 1: a key published for signing only, the current one untouched.
    let staged = env
        .run(&["keys", "rotate", "--saml-sp", "--stage", "signing-only"])
        .await;
    assert!(staged.status.success(), "{staged}");
    assert!(staged.stderr.contains("--stage promote"), "{staged}");
    let kid = staged.stdout_lines()[0].to_owned();
    let store = env.store().await;
    let published = |what: &'static str| {
        let store = &store;
        async move {
            store
                .scalar(&format!(
                    "SELECT COUNT(*) FROM sso_sp_keys WHERE published = '{what}' AND retire_at_us IS NULL"
                ))
                .await
        }
    };
    assert_eq!(
        (published("both").await, published("signing").await),
        (1, 1)
    );
    // One staged key at a time; a one-step rollover waits for it as well.
    for args in [
        &["keys", "rotate", "--saml-sp", "--stage", "signing-only"][..],
        &["keys", "rotate", "--saml-sp"][..],
    ] {
        let again = env.run(args).await;
        assert!(!again.status.success(), "{again}");
        assert!(
            again.stderr.contains(&format!("{kid} is staged")),
            "{again}"
        );
    }
    // Stage 2: promoted; the old key is unpublished and retires after the overlap.
    let promoted = env
        .run(&["keys", "rotate", "--saml-sp", "--stage", "promote"])
        .await;
    assert!(promoted.status.success(), "{promoted}");
    assert_eq!(promoted.stdout_lines(), [kid.as_str()]);
    assert_eq!(published("both").await, 1);
    assert_eq!(
        store
            .scalar("SELECT COUNT(*) FROM sso_sp_keys WHERE published = 'none' AND retire_at_us IS NOT NULL")
            .await,
        1
    );
    let nothing = env
        .run(&["keys", "rotate", "--saml-sp", "--stage", "promote"])
        .await;
    assert!(!nothing.status.success(), "{nothing}");
    assert!(
        nothing.stderr.contains("no SAML SP key is staged"),
        "{nothing}"
    );
    // --stage is for the SAML SP key, and names its values.
    let alone = env.run(&["keys", "rotate", "--stage", "promote"]).await;
    assert!(!alone.status.success(), "{alone}");
    let bad = env
        .run(&["keys", "rotate", "--saml-sp", "--stage", "later"])
        .await;
    assert!(!bad.status.success(), "{bad}");
    assert!(bad.stderr.contains("signing-only"), "{bad}");
}
