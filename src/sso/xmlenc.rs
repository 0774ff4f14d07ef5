//! XML Encryption of SAML assertions (XML Encryption 1.1), decrypted by the gateway rather
//! than by samael, which reads only some of the forms IdPs send (AES-128 only, a KeyInfo
//! with its own `ds` declaration, one EncryptedKey). The algorithms are checked, and named
//! when refused, before anything is decrypted: content AES-128/192/256 in GCM or CBC; key
//! transport RSA-OAEP (`rsa-oaep-mgf1p`, or `xmlenc11#rsa-oaep` with its digest and MGF);
//! RSA PKCS#1 v1.5 is refused (padding oracles). Several EncryptedKeys (one per SP
//! certificate in the metadata) are each tried with each SP key. The decrypted assertion
//! is put where the `EncryptedAssertion` was, and checked like any other (`saml.rs`).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use openssl::md::Md;
use openssl::pkey_ctx::PkeyCtx;
use openssl::rsa::Padding;
use openssl::symm::{Cipher, Crypter, Mode};
use quick_xml::events::{BytesStart, Event};

use super::saml::{Refusal, SpKey};

const XMLENC: &str = "http://www.w3.org/2001/04/xmlenc#";
const XMLENC11: &str = "http://www.w3.org/2009/xmlenc11#";
const RSA_OAEP_MGF1P: &str = "http://www.w3.org/2001/04/xmlenc#rsa-oaep-mgf1p";
const RSA_OAEP: &str = "http://www.w3.org/2009/xmlenc11#rsa-oaep";
const RSA_1_5: &str = "http://www.w3.org/2001/04/xmlenc#rsa-1_5";

fn refuse(code: &'static str, message: impl Into<String>) -> Refusal {
    Refusal {
        code,
        message: message.into(),
    }
}

pub fn undecryptable() -> Refusal {
    refuse(
        "decryption",
        "the encrypted assertion could not be decrypted with the gateway's key (check that the IdP encrypts to the certificate in the gateway's SP metadata)",
    )
}

/// One `EncryptedKey`: the content key wrapped for one recipient.
#[derive(Debug, Default)]
struct KeyCipher {
    alg: String,
    digest: Option<String>,
    mgf: Option<String>,
    cipher: String,
}

/// The encrypted assertion of a response: where it is, and what it needs.
#[derive(Debug)]
pub struct Encrypted {
    /// Byte range of the `EncryptedAssertion` element in the document.
    span: (usize, usize),
    data_alg: String,
    data_cipher: String,
    keys: Vec<KeyCipher>,
}

fn attr(e: &BytesStart<'_>, name: &[u8]) -> Option<String> {
    e.attributes()
        .flatten()
        .find(|a| a.key.as_ref() == name)
        .map(|a| String::from_utf8_lossy(a.value.as_ref()).into_owned())
}

/// The content cipher for a data algorithm URI: (cipher, GCM?).
fn data_cipher(alg: &str) -> Option<(Cipher, bool)> {
    Some(
        match alg.strip_prefix(XMLENC).or(alg.strip_prefix(XMLENC11))? {
            "aes128-cbc" => (Cipher::aes_128_cbc(), false),
            "aes192-cbc" => (Cipher::aes_192_cbc(), false),
            "aes256-cbc" => (Cipher::aes_256_cbc(), false),
            "aes128-gcm" if alg.starts_with(XMLENC11) => (Cipher::aes_128_gcm(), true),
            "aes192-gcm" if alg.starts_with(XMLENC11) => (Cipher::aes_192_gcm(), true),
            "aes256-gcm" if alg.starts_with(XMLENC11) => (Cipher::aes_256_gcm(), true),
            _ => return None,
        },
    )
}

fn digest(uri: Option<&str>) -> Option<&'static openssl::md::MdRef> {
    Some(match uri {
        None | Some("http://www.w3.org/2000/09/xmldsig#sha1") => Md::sha1(),
        Some("http://www.w3.org/2001/04/xmldsig-more#sha224") => Md::sha224(),
        Some("http://www.w3.org/2001/04/xmlenc#sha256") => Md::sha256(),
        Some("http://www.w3.org/2001/04/xmldsig-more#sha384") => Md::sha384(),
        Some("http://www.w3.org/2001/04/xmlenc#sha512") => Md::sha512(),
        _ => return None,
    })
}

fn mgf(uri: Option<&str>) -> Option<&'static openssl::md::MdRef> {
    Some(match uri {
        None | Some("http://www.w3.org/2009/xmlenc11#mgf1sha1") => Md::sha1(),
        Some("http://www.w3.org/2009/xmlenc11#mgf1sha224") => Md::sha224(),
        Some("http://www.w3.org/2009/xmlenc11#mgf1sha256") => Md::sha256(),
        Some("http://www.w3.org/2009/xmlenc11#mgf1sha384") => Md::sha384(),
        Some("http://www.w3.org/2009/xmlenc11#mgf1sha512") => Md::sha512(),
        _ => return None,
    })
}

/// The response's encrypted assertion (directly under the Response), its algorithms
/// refused by name when the gateway cannot or will not decrypt them.
pub fn find(xml: &str) -> Result<Option<Encrypted>, Refusal> {
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut stack: Vec<Vec<u8>> = Vec::new();
    let mut found: Option<Encrypted> = None;
    let mut inside = false;
    // Where the next CipherValue text goes: Some(Some(i)) key i, Some(None) the data.
    let mut text_target: Option<Option<usize>> = None;
    let mut key_index: Option<usize> = None;
    loop {
        let before = reader.buffer_position() as usize;
        let ev = reader
            .read_event()
            .map_err(|e| refuse("malformed", format!("the XML does not parse: {e}")))?;
        match ev {
            Event::Start(ref e) | Event::Empty(ref e) => {
                let local = e.local_name().as_ref().to_vec();
                if local == b"EncryptedAssertion" && stack.len() == 1 && found.is_none() {
                    inside = true;
                    found = Some(Encrypted {
                        span: (before, before),
                        data_alg: String::new(),
                        data_cipher: String::new(),
                        keys: Vec::new(),
                    });
                }
                if inside && let Some(enc) = found.as_mut() {
                    let parent = stack.last().map(Vec::as_slice);
                    let grand = stack.iter().rev().nth(1).map(Vec::as_slice);
                    match local.as_slice() {
                        b"EncryptedKey" => {
                            enc.keys.push(KeyCipher::default());
                            key_index = Some(enc.keys.len() - 1);
                        }
                        b"EncryptionMethod" => {
                            let alg = attr(e, b"Algorithm").unwrap_or_default();
                            match (parent, key_index) {
                                (Some(b"EncryptedKey"), Some(i)) => enc.keys[i].alg = alg,
                                (Some(b"EncryptedData"), _) => enc.data_alg = alg,
                                _ => {}
                            }
                        }
                        b"DigestMethod" | b"MGF"
                            if parent == Some(b"EncryptionMethod")
                                && grand == Some(b"EncryptedKey") =>
                        {
                            if let Some(i) = key_index {
                                let alg = attr(e, b"Algorithm");
                                if local == b"MGF" {
                                    enc.keys[i].mgf = alg;
                                } else {
                                    enc.keys[i].digest = alg;
                                }
                            }
                        }
                        b"CipherValue" => {
                            text_target = match grand {
                                Some(b"EncryptedKey") => key_index.map(Some),
                                Some(b"EncryptedData") => Some(None),
                                _ => None,
                            };
                        }
                        _ => {}
                    }
                }
                if matches!(ev, Event::Start(_)) {
                    stack.push(local);
                }
            }
            Event::Text(t) => {
                if let (Some(target), Some(enc)) = (text_target, found.as_mut()) {
                    let s = String::from_utf8_lossy(t.as_ref());
                    match target {
                        Some(i) => enc.keys[i].cipher.push_str(&s),
                        None => enc.data_cipher.push_str(&s),
                    }
                }
            }
            Event::End(_) => {
                let local = stack.pop();
                text_target = None;
                if local.as_deref() == Some(b"EncryptedKey") {
                    key_index = None;
                }
                if inside && local.as_deref() == Some(b"EncryptedAssertion") {
                    inside = false;
                    if let Some(enc) = found.as_mut() {
                        enc.span.1 = reader.buffer_position() as usize;
                    }
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if let Some(enc) = &found {
        check_algorithms(enc)?;
    }
    Ok(found)
}

fn check_algorithms(enc: &Encrypted) -> Result<(), Refusal> {
    if data_cipher(&enc.data_alg).is_none() {
        return Err(refuse(
            "decryption",
            format!(
                "the assertion is encrypted with {:?}, which the gateway does not decrypt; configure the IdP for AES-GCM or AES-CBC (the SP metadata lists them)",
                enc.data_alg
            ),
        ));
    }
    if enc.keys.is_empty() {
        return Err(refuse(
            "decryption",
            "the encrypted assertion carries no EncryptedKey (a key the gateway could unwrap)",
        ));
    }
    for k in &enc.keys {
        if k.alg == RSA_1_5 {
            return Err(refuse(
                "decryption",
                "the assertion's key is encrypted with RSA PKCS#1 v1.5, which the gateway refuses (padding-oracle attacks); configure the IdP for RSA-OAEP",
            ));
        }
        let ok = (k.alg == RSA_OAEP_MGF1P && k.mgf.is_none() || k.alg == RSA_OAEP)
            && digest(k.digest.as_deref()).is_some()
            && mgf(k.mgf.as_deref()).is_some();
        if !ok {
            return Err(refuse(
                "decryption",
                format!(
                    "the assertion's key is encrypted with {:?} (digest {:?}, MGF {:?}), which the gateway does not support; configure the IdP for RSA-OAEP",
                    k.alg, k.digest, k.mgf
                ),
            ));
        }
    }
    Ok(())
}

/// Decrypt the assertion and put it where the `EncryptedAssertion` was.
pub fn decrypt_in_place(xml: &str, enc: &Encrypted, keys: &[SpKey]) -> Result<String, Refusal> {
    let plain = keys
        .iter()
        .flat_map(|k| enc.keys.iter().map(move |w| (k, w)))
        .find_map(|(k, w)| decrypt(enc, w, k).ok())
        .ok_or_else(undecryptable)?;
    let plain = String::from_utf8(plain).map_err(|_| undecryptable())?;
    // An Element-type EncryptedData holds the element itself; drop any XML declaration.
    let plain = match plain.trim_start().strip_prefix("<?xml") {
        Some(rest) => rest.split_once("?>").map(|(_, r)| r).unwrap_or(rest),
        None => plain.trim_start(),
    };
    let (a, b) = enc.span;
    let (head, tail) = (xml.get(..a), xml.get(b..));
    match (head, tail) {
        (Some(h), Some(t)) => Ok(format!("{h}{}{t}", plain.trim())),
        _ => Err(undecryptable()),
    }
}

fn unwrap_key(w: &KeyCipher, key: &SpKey) -> anyhow::Result<Vec<u8>> {
    let compact: String = w
        .cipher
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    let wrapped = STANDARD.decode(compact)?;
    let mut ctx = PkeyCtx::new(&key.key)?;
    ctx.decrypt_init()?;
    ctx.set_rsa_padding(Padding::PKCS1_OAEP)?;
    let d = digest(w.digest.as_deref()).ok_or_else(|| anyhow::anyhow!("digest"))?;
    let m = mgf(w.mgf.as_deref()).ok_or_else(|| anyhow::anyhow!("mgf"))?;
    ctx.set_rsa_oaep_md(d)?;
    ctx.set_rsa_mgf1_md(m)?;
    let mut out = Vec::new();
    ctx.decrypt_to_vec(&wrapped, &mut out)?;
    Ok(out)
}

fn decrypt(enc: &Encrypted, w: &KeyCipher, key: &SpKey) -> anyhow::Result<Vec<u8>> {
    let (cipher, gcm) = data_cipher(&enc.data_alg).ok_or_else(|| anyhow::anyhow!("alg"))?;
    let cek = unwrap_key(w, key)?;
    anyhow::ensure!(cek.len() == cipher.key_len(), "wrong key length");
    let compact: String = enc
        .data_cipher
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    let data = STANDARD.decode(compact)?;
    if gcm {
        // IV (12) || ciphertext || tag (16), XML Encryption 1.1 section 5.2.4.
        anyhow::ensure!(data.len() >= 28, "too short");
        let (iv, rest) = data.split_at(12);
        let (ct, tag) = rest.split_at(rest.len() - 16);
        Ok(openssl::symm::decrypt_aead(
            cipher,
            &cek,
            Some(iv),
            &[],
            ct,
            tag,
        )?)
    } else {
        // IV (16) || ciphertext, padded as XML Encryption says: the last byte is the
        // padding length, the other padding bytes arbitrary (so OpenSSL's PKCS#7 check is
        // off).
        anyhow::ensure!(data.len() >= 32 && data.len() % 16 == 0, "bad length");
        let (iv, ct) = data.split_at(16);
        let mut c = Crypter::new(cipher, Mode::Decrypt, &cek, Some(iv))?;
        c.pad(false);
        let mut out = vec![0u8; ct.len() + 16];
        let mut n = c.update(ct, &mut out)?;
        n += c.finalize(&mut out[n..])?;
        out.truncate(n);
        let pad = usize::from(*out.last().ok_or_else(|| anyhow::anyhow!("empty"))?);
        anyhow::ensure!((1..=16).contains(&pad) && pad <= out.len(), "bad padding");
        out.truncate(out.len() - pad);
        Ok(out)
    }
}
