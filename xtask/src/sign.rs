//! `publish --sign-key`: signatures in the form cosign writes and verifies with a key
//! (`cosign verify --key`): a "simple signing" payload naming the repository and the manifest
//! digest, signed with ECDSA P-256 over SHA-256 (the DER signature, base64, in the layer's
//! `dev.cosignproject.cosign/signature` annotation), pushed as the manifest tagged
//! `sha256-<hex>.sig`. The key is the user's, a PEM file; RFC 6979 nonces make one key and one
//! digest give one signature, so a second publish sends nothing.

use std::path::Path;

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use p256::ecdsa::signature::Signer as _;
use p256::ecdsa::{Signature, SigningKey};
use p256::pkcs8::DecodePrivateKey;
use serde_json::json;

pub const PAYLOAD_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";

/// The user's signing key.
pub struct Signer {
    key: SigningKey,
}

impl Signer {
    /// Reads an unencrypted P-256 key in PEM: PKCS#8 (`openssl genpkey -algorithm EC -pkeyopt
    /// ec_paramgen_curve:P-256`) or SEC1 (`openssl ecparam -genkey -name prime256v1`).
    pub fn load(path: &Path) -> Result<Signer> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the signing key {}", path.display()))?;
        let how = "make one with `openssl genpkey -algorithm EC -pkeyopt \
                   ec_paramgen_curve:P-256 -out key.pem` and give its public half \
                   (`openssl pkey -in key.pem -pubout`) to whoever verifies";
        if text.contains("ENCRYPTED") {
            bail!(
                "the signing key {} is encrypted, and publish reads only unencrypted keys; {how}",
                path.display()
            );
        }
        let key = SigningKey::from_pkcs8_pem(&text).ok().or_else(|| {
            p256::SecretKey::from_sec1_pem(&text)
                .ok()
                .map(SigningKey::from)
        });
        match key {
            Some(key) => Ok(Signer { key }),
            None => bail!(
                "the signing key {} is not a P-256 private key in PEM; {how}",
                path.display()
            ),
        }
    }

    /// The payload that names `digest` in the repository `reference`, and its signature
    /// (base64 of the DER encoding).
    pub fn sign(&self, reference: &str, digest: &str) -> Result<(Vec<u8>, String)> {
        let payload = serde_json::to_vec(&json!({
            "critical": {
                "identity": {"docker-reference": reference},
                "image": {"docker-manifest-digest": digest},
                "type": "cosign container image signature",
            },
            "optional": null,
        }))?;
        let signature: Signature = self.key.sign(&payload);
        let der = signature.to_der();
        let encoded = base64::engine::general_purpose::STANDARD.encode(der.as_bytes());
        Ok((payload, encoded))
    }
}

/// The tag of `digest`'s signatures: `sha256-<hex>.sig`.
pub fn signature_tag(digest: &str) -> String {
    format!("{}.sig", digest.replacen(':', "-", 1))
}

/// The image config of a signature manifest whose layers are `payloads` (their digests): the
/// empty config with those layers, as cosign writes it.
pub fn config(payloads: &[String]) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "architecture": "",
        "config": {},
        "created": "0001-01-01T00:00:00Z",
        "history": payloads.iter().map(|_| json!({"created": "0001-01-01T00:00:00Z"})).collect::<Vec<_>>(),
        "os": "",
        "rootfs": {"type": "layers", "diff_ids": payloads},
    }))
    .expect("a JSON value serializes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;
    use p256::ecdsa::signature::Verifier;
    use p256::pkcs8::LineEnding;

    /// A fixed test key (PKCS#8), made for these tests only.
    fn key(dir: &Path) -> std::path::PathBuf {
        let secret = p256::SecretKey::from_slice(&[7u8; 32]).unwrap();
        let pem = p256::pkcs8::EncodePrivateKey::to_pkcs8_pem(&secret, LineEnding::LF).unwrap();
        let path = dir.join("key.pem");
        std::fs::write(&path, pem.as_bytes()).unwrap();
        path
    }

    #[test]
    fn a_signature_verifies_with_the_public_key_and_is_the_same_each_time() {
        let dir = TempDir::new("sign");
        let signer = Signer::load(&key(dir.path())).unwrap();
        let (payload, signature) = signer.sign("r.example/p", "sha256:ab").unwrap();
        let again = signer.sign("r.example/p", "sha256:ab").unwrap();
        assert_eq!((payload.clone(), signature.clone()), again);
        let der = base64::engine::general_purpose::STANDARD
            .decode(&signature)
            .unwrap();
        let signature = Signature::from_der(&der).unwrap();
        signer
            .key
            .verifying_key()
            .verify(&payload, &signature)
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&payload).unwrap();
        assert_eq!(
            v["critical"]["image"]["docker-manifest-digest"],
            "sha256:ab"
        );
    }

    #[test]
    fn an_encrypted_or_foreign_key_is_refused_with_how_to_make_one() {
        let dir = TempDir::new("sign-bad");
        let encrypted = dir.path().join("enc.pem");
        std::fs::write(
            &encrypted,
            "-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\n",
        )
        .unwrap();
        let e = format!("{:#}", Signer::load(&encrypted).err().unwrap());
        assert!(
            e.contains("is encrypted") && e.contains("openssl genpkey"),
            "{e}"
        );
        let other = dir.path().join("rsa.pem");
        std::fs::write(
            &other,
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        let e = format!("{:#}", Signer::load(&other).err().unwrap());
        assert!(e.contains("not a P-256 private key"), "{e}");
    }
}
