use jsonwebtoken::{DecodingKey, Validation, jwk::JwkSet};
use partner_gateway::keys::{self, Alg, crypto::MasterKey};
use partner_gateway::time::now_micros;
use serde_json::{Value, json};

use crate::both;
use crate::helpers::TestApp;

async fn jwks(app: &TestApp) -> (reqwest::header::HeaderMap, Value) {
    let resp = app
        .client
        .get(app.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let headers = resp.headers().clone();
    (headers, resp.json().await.unwrap())
}

both! {
    async fn the_jwks_publishes_rs256_rs384_and_es384_keys_without_private_parts(app) {
        let (headers, body) = jwks(&app).await;
        assert_eq!(headers["cache-control"], "public, max-age=300");
        let keys = body["keys"].as_array().unwrap();
        let mut algs: Vec<&str> = keys.iter().map(|k| k["alg"].as_str().unwrap()).collect();
        algs.sort_unstable();
        assert_eq!(algs, ["ES384", "RS256", "RS384"]);
        for k in keys {
            assert_eq!(k["use"], "sig");
            assert!(k["kid"].as_str().is_some_and(|kid| !kid.is_empty()));
            assert!(k.get("d").is_none() && k.get("p").is_none(), "private parts published: {k}");
        }
        let ec = keys.iter().find(|k| k["kty"] == "EC").unwrap();
        assert_eq!(ec["crv"], "P-384");
        // An independent JWKS parser accepts it.
        serde_json::from_value::<JwkSet>(body).unwrap();
    }

    async fn tokens_the_gateway_signs_verify_against_its_published_jwks(app) {
        let (_, body) = jwks(&app).await;
        let set: JwkSet = serde_json::from_value(body).unwrap();
        for alg in Alg::ALL {
            let key = keys::signing_key(app.db(), &app.state.master_key, alg).await.unwrap();
            let exp = chrono::Utc::now().timestamp() + 300;
            let claims = json!({"iss": "client-1", "sub": "client-1", "aud": "https://ehr.example/token", "exp": exp, "jti": "j1"});
            let token = keys::sign_jwt(&key, &claims).unwrap();
            let header = jsonwebtoken::decode_header(&token).unwrap();
            assert_eq!(header.kid.as_deref(), Some(key.kid.as_str()));
            let jwk = set.find(&key.kid).unwrap();
            let mut validation = Validation::new(alg.jwt());
            validation.set_audience(&["https://ehr.example/token"]);
            let data = jsonwebtoken::decode::<Value>(&token, &DecodingKey::from_jwk(jwk).unwrap(), &validation).unwrap();
            assert_eq!(data.claims["jti"], "j1");
            // The other algorithm's key does not verify it.
            let other = set.keys.iter().find(|k| k.common.key_id.as_deref() != Some(key.kid.as_str())).unwrap();
            assert!(jsonwebtoken::decode::<Value>(&token, &DecodingKey::from_jwk(other).unwrap(), &validation).is_err());
        }
    }

    async fn a_rotated_out_key_stays_published_for_the_overlap_then_retires(app) {
        let before = keys::signing_key(app.db(), &app.state.master_key, Alg::Rs384).await.unwrap();
        let now = now_micros();
        let hour = 3_600_000_000;
        let new = keys::rotate_signing_keys(app.db(), &app.state.master_key, &Alg::ALL, now, hour).await.unwrap();
        assert_eq!(new.len(), 3);
        let after = keys::signing_key(app.db(), &app.state.master_key, Alg::Rs384).await.unwrap();
        assert_ne!(before.kid, after.kid);
        assert!(new.contains(&after.kid));
        let published = |t| keys::published_keys(app.db(), t);
        let kids = |v: Vec<Value>| v.iter().map(|k| k["kid"].as_str().unwrap().to_owned()).collect::<Vec<_>>();
        let during = kids(published(now + 1).await.unwrap());
        assert_eq!(during.len(), 6);
        assert!(during.contains(&before.kid));
        let later = kids(published(now + 2 * hour).await.unwrap());
        assert_eq!(later.len(), 3);
        assert!(!later.contains(&before.kid));
        let (_, body) = jwks(&app).await;
        assert_eq!(body["keys"].as_array().unwrap().len(), 6);
    }

    async fn private_keys_are_sealed_at_rest(app) {
        let key = keys::signing_key(app.db(), &app.state.master_key, Alg::Es384).await.unwrap();
        let sealed: Vec<u8> = partner_gateway::with_db!(app.db(), pool => {
            sqlx::query_scalar("SELECT sealed_private_key FROM signing_keys WHERE kid = $1").bind(&key.kid).fetch_one(pool).await
        })
        .unwrap();
        assert!(!sealed.windows(32).any(|w| key.private_der.windows(32).any(|p| p == w)));
        use base64::Engine;
        let wrong = MasterKey::from_base64(&base64::engine::general_purpose::STANDARD.encode([9u8; 32])).unwrap();
        let err = keys::signing_key(app.db(), &wrong, Alg::Es384).await.unwrap_err();
        assert!(err.to_string().contains("wrong master key"), "{err}");
    }
}
