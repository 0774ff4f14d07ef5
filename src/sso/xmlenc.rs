//! XML Encryption of SAML assertions, what `samael` leaves out: the algorithms are checked
//! (and named) before anything is decrypted; a KeyInfo written without a `ds` prefix
//! declaration (pysaml2, .NET) is given one, because samael 0.0.22 cannot read it
//! otherwise; and an assertion signed inside its encryption, in a Response that is not
//! signed (ADFS's default), is decrypted here and put back in place so that samael can
//! check the assertion's own signature. Every decryption failure reads the same, so the
//! gateway is no oracle for the ciphertext.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use openssl::symm::{Cipher, Crypter, Mode};
use quick_xml::events::{BytesStart, Event};

use super::saml::{Refusal, SpKey};

const AES128_CBC: &str = "http://www.w3.org/2001/04/xmlenc#aes128-cbc";
const AES128_GCM: &str = "http://www.w3.org/2009/xmlenc11#aes128-gcm";
const RSA_OAEP_MGF1P: &str = "http://www.w3.org/2001/04/xmlenc#rsa-oaep-mgf1p";
const DSIG: &str = "http://www.w3.org/2000/09/xmldsig#";

fn refuse(code: &'static str, message: impl Into<String>) -> Refusal {
    Refusal {
        code,
        message: message.into(),
    }
}

fn undecryptable() -> Refusal {
    refuse(
        "decryption",
        "the encrypted assertion could not be decrypted with the gateway's key (check that the IdP encrypts to the certificate in the gateway's SP metadata)",
    )
}

/// The encrypted assertion of a response: where it is, and what it needs.
pub struct Encrypted {
    /// Byte range of the `EncryptedAssertion` element in the document.
    pub span: (usize, usize),
    pub data_alg: String,
    pub key_alg: String,
    key_cipher: String,
    data_cipher: String,
}

/// The response's (first) encrypted assertion, its algorithms refused by name when the
/// gateway cannot or will not decrypt them.
pub fn find(xml: &str) -> Result<Option<Encrypted>, Refusal> {
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut stack: Vec<Vec<u8>> = Vec::new();
    let mut found: Option<Encrypted> = None;
    let mut start = 0usize;
    let mut in_assertion = false;
    let mut text_target: Option<bool> = None; // Some(true): key cipher; Some(false): data
    loop {
        let before = reader.buffer_position() as usize;
        let ev = reader
            .read_event()
            .map_err(|e| refuse("malformed", format!("the XML does not parse: {e}")))?;
        match ev {
            Event::Start(ref e) | Event::Empty(ref e) => {
                let local = e.local_name().as_ref().to_vec();
                if local == b"EncryptedAssertion" && stack.len() == 1 && found.is_none() {
                    in_assertion = true;
                    start = before;
                    found = Some(Encrypted {
                        span: (before, before),
                        data_alg: String::new(),
                        key_alg: String::new(),
                        key_cipher: String::new(),
                        data_cipher: String::new(),
                    });
                }
                if in_assertion && let Some(enc) = found.as_mut() {
                    let parent = stack.last().map(Vec::as_slice);
                    if local == b"EncryptionMethod" {
                        let alg = attr(e, b"Algorithm").unwrap_or_default();
                        match parent {
                            Some(b"EncryptedKey") => enc.key_alg = alg,
                            Some(b"EncryptedData") => enc.data_alg = alg,
                            _ => {}
                        }
                    }
                    if local == b"CipherValue" {
                        let grand = stack.iter().rev().nth(1).map(Vec::as_slice);
                        text_target = match grand {
                            Some(b"EncryptedKey") => Some(true),
                            Some(b"EncryptedData") => Some(false),
                            _ => None,
                        };
                    }
                }
                if matches!(ev, Event::Start(_)) {
                    stack.push(local);
                }
            }
            Event::Text(t) => {
                if let (Some(target), Some(enc)) = (text_target, found.as_mut()) {
                    let s = String::from_utf8_lossy(t.as_ref()).into_owned();
                    if target {
                        enc.key_cipher.push_str(&s);
                    } else {
                        enc.data_cipher.push_str(&s);
                    }
                }
            }
            Event::End(_) => {
                let local = stack.pop();
                text_target = None;
                if in_assertion && local.as_deref() == Some(b"EncryptedAssertion") {
                    in_assertion = false;
                    if let Some(enc) = found.as_mut() {
                        enc.span = (start, reader.buffer_position() as usize);
                    }
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if let Some(enc) = &found {
        if ![AES128_GCM, AES128_CBC].contains(&enc.data_alg.as_str()) {
            return Err(refuse(
                "decryption",
                format!(
                    "the assertion is encrypted with {:?}, which the gateway does not decrypt; configure the IdP for AES-128-GCM or AES-128-CBC (the SP metadata lists them)",
                    enc.data_alg
                ),
            ));
        }
        if enc.key_alg == "http://www.w3.org/2001/04/xmlenc#rsa-1_5" {
            return Err(refuse(
                "decryption",
                "the assertion's key is encrypted with RSA PKCS#1 v1.5, which the gateway refuses (padding-oracle attacks); configure the IdP for RSA-OAEP",
            ));
        }
        if enc.key_alg != RSA_OAEP_MGF1P {
            return Err(refuse(
                "decryption",
                format!(
                    "the assertion's key is encrypted with {:?}, which the gateway does not support; configure the IdP for RSA-OAEP (rsa-oaep-mgf1p)",
                    enc.key_alg
                ),
            ));
        }
    }
    Ok(found)
}

fn attr(e: &BytesStart<'_>, name: &[u8]) -> Option<String> {
    e.attributes()
        .flatten()
        .find(|a| a.key.as_ref() == name)
        .map(|a| String::from_utf8_lossy(a.value.as_ref()).into_owned())
}

/// Give every `KeyInfo` inside the encrypted assertion an `xmlns:ds` declaration when it
/// has none: samael requires one to read the element. An unused declaration is not part
/// of the exclusive canonical form the IdP signed, so the signature still verifies; under
/// inclusive C14N it would not, and the response is refused rather than misread.
pub fn declare_ds_on_key_info(xml: &str) -> Result<String, Refusal> {
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut writer = quick_xml::Writer::new(Vec::with_capacity(xml.len() + 128));
    let mut inside = 0usize;
    let bad =
        |e: &dyn std::fmt::Display| refuse("malformed", format!("the XML does not parse: {e}"));
    loop {
        let ev = reader.read_event().map_err(|e| bad(&e))?;
        let out = match ev {
            Event::Start(ref e) | Event::Empty(ref e)
                if e.local_name().as_ref() == b"EncryptedAssertion" || inside > 0 =>
            {
                let is_start = matches!(ev, Event::Start(_));
                if is_start {
                    inside += 1;
                }
                let declared = e
                    .attributes()
                    .flatten()
                    .any(|a| matches!(a.key.as_ref(), b"xmlns:ds" | b"xmlns:dsig"));
                if e.local_name().as_ref() == b"KeyInfo" && !declared {
                    let mut fixed = e.to_owned();
                    fixed.push_attribute(("xmlns:ds", DSIG));
                    if is_start {
                        Event::Start(fixed)
                    } else {
                        Event::Empty(fixed)
                    }
                } else {
                    ev.into_owned()
                }
            }
            Event::End(_) if inside > 0 => {
                inside -= 1;
                ev.into_owned()
            }
            Event::Eof => break,
            other => other.into_owned(),
        };
        writer.write_event(out).map_err(|e| bad(&e))?;
    }
    String::from_utf8(writer.into_inner()).map_err(|e| bad(&e))
}

/// Decrypt the assertion and put it where the `EncryptedAssertion` was. For responses
/// whose Response carries no signature: the assertion inside must then be signed, which
/// samael checks on the result.
pub fn decrypt_in_place(xml: &str, enc: &Encrypted, keys: &[SpKey]) -> Result<String, Refusal> {
    let plain = keys
        .iter()
        .find_map(|k| decrypt(enc, k).ok())
        .ok_or_else(undecryptable)?;
    let plain = String::from_utf8(plain).map_err(|_| undecryptable())?;
    // An Element-type EncryptedData holds the element itself; drop any XML declaration.
    let plain = match plain.trim_start().strip_prefix("<?xml") {
        Some(rest) => rest.split_once("?>").map(|(_, r)| r).unwrap_or(rest),
        None => plain.trim_start(),
    };
    let (a, b) = enc.span;
    Ok(format!("{}{}{}", &xml[..a], plain.trim(), &xml[b..]))
}

fn decrypt(enc: &Encrypted, key: &SpKey) -> anyhow::Result<Vec<u8>> {
    let compact = |s: &str| -> String { s.chars().filter(|c| !c.is_ascii_whitespace()).collect() };
    let wrapped = STANDARD.decode(compact(&enc.key_cipher))?;
    let rsa = key.key.rsa()?;
    let mut cek = vec![0u8; rsa.size() as usize];
    let n = rsa.private_decrypt(&wrapped, &mut cek, openssl::rsa::Padding::PKCS1_OAEP)?;
    cek.truncate(n);
    anyhow::ensure!(cek.len() == 16, "not an AES-128 key");
    let data = STANDARD.decode(compact(&enc.data_cipher))?;
    if enc.data_alg == AES128_GCM {
        // IV (12) || ciphertext || tag (16), XML Encryption 1.1 section 5.2.4.
        anyhow::ensure!(data.len() >= 28, "too short");
        let (iv, rest) = data.split_at(12);
        let (ct, tag) = rest.split_at(rest.len() - 16);
        Ok(openssl::symm::decrypt_aead(
            Cipher::aes_128_gcm(),
            &cek,
            Some(iv),
            &[],
            ct,
            tag,
        )?)
    } else {
        // IV (16) || ciphertext, padded as XML Encryption says: the last byte is the
        // padding length, the other padding bytes arbitrary (so OpenSSL's PKCS#7 check
        // is off).
        anyhow::ensure!(data.len() >= 32 && data.len() % 16 == 0, "bad length");
        let (iv, ct) = data.split_at(16);
        let mut c = Crypter::new(Cipher::aes_128_cbc(), Mode::Decrypt, &cek, Some(iv))?;
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
