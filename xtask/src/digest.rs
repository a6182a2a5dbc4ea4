//! Content digests: lowercase hex, the sha256 of a file, and `Key`, the content key of anything
//! cached (stages, the package, images, verdicts).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context as _, Result};
use sha2::{Digest as _, Sha256};

/// `bytes` as lowercase hexadecimal, two digits a byte.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The sha256 of the file at `path`, in hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(hex(&h.finalize()))
}

/// A content key: named inputs, each with the content that identifies it, hashed in name order.
/// Any change to any input changes the key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Key {
    inputs: BTreeMap<String, String>,
}

impl Key {
    pub fn new() -> Key {
        Key::default()
    }

    /// Sets input `name` to `value` (replacing an earlier value of that name).
    pub fn set(&mut self, name: impl Into<String>, value: impl Into<String>) -> &mut Key {
        self.inputs.insert(name.into(), value.into());
        self
    }

    /// Sets input `name` to the sha256 (hex) of `content`: a script, a template, source text.
    pub fn set_sha256(&mut self, name: impl Into<String>, content: impl AsRef<[u8]>) -> &mut Key {
        self.set(name, hex(&Sha256::digest(content.as_ref())))
    }

    /// The inputs by name, as a stage's `meta.json` records them.
    pub fn into_inputs(self) -> BTreeMap<String, String> {
        self.inputs
    }

    /// The key, in hex.
    pub fn hex(&self) -> String {
        key_of(&self.inputs)
    }

    /// The key as a `Digest`.
    pub fn digest(&self) -> Digest {
        Digest(self.hex())
    }
}

/// A content key: the sha256, in hex, of everything that can change what it names. Stages,
/// their cache entries and the records of builds carry it in this form; `short` is how
/// messages and names abbreviate it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct Digest(String);

impl Digest {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// What stands for the key of a stage that was described but not run (the floor's plan):
    /// it names the stage and is never looked up.
    pub fn unrun(stage: &str) -> Digest {
        Digest(format!("unrun-{stage}"))
    }

    /// The first twelve hex digits, as container, log and image names use them.
    pub fn short(&self) -> &str {
        &self.0[..self.0.len().min(12)]
    }
}

impl std::fmt::Display for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::ops::Deref for Digest {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
impl From<&str> for Digest {
    fn from(s: &str) -> Digest {
        Digest(s.to_string())
    }
}

impl From<Digest> for String {
    fn from(d: Digest) -> String {
        d.0
    }
}

impl From<BTreeMap<String, String>> for Key {
    fn from(inputs: BTreeMap<String, String>) -> Key {
        Key { inputs }
    }
}

/// The sha256 of a map of inputs, each entry length-prefixed so that no two maps share an
/// encoding; `Key::hex`.
pub fn key_of(inputs: &BTreeMap<String, String>) -> String {
    let mut h = Sha256::new();
    h.update(b"python-fips stage key v1\n");
    for (k, v) in inputs {
        h.update(format!("{}:{k}={}:{v}\n", k.len(), v.len()).as_bytes());
    }
    hex(&h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The encoding every cache entry so far was keyed with, computed independently.
    #[test]
    fn a_key_hashes_its_inputs_in_the_v1_encoding() {
        let mut key = Key::new();
        key.set("stage", "python")
            .set_sha256("script", "echo hi\n")
            .set("dep:openssl", "ab".repeat(32));
        assert_eq!(
            key.hex(),
            "7da3721fde89eba816d4fc725939dafa9a3e16fa79d168391f4dc74195eb274a"
        );
        let inputs = key.clone().into_inputs();
        assert_eq!(inputs["script"], hex(&Sha256::digest(b"echo hi\n")));
        assert_eq!(Key::from(inputs).hex(), key.hex());
        key.set("stage", "openssl");
        assert_ne!(
            key.hex(),
            "7da3721fde89eba816d4fc725939dafa9a3e16fa79d168391f4dc74195eb274a"
        );
    }
}
