//! `keys rotate`: new signing keys, the old ones kept in the JWKS for the overlap.

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
