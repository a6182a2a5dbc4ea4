//! `BUILD-INFO.json`, the tree's record of what it was built from: written by the package step,
//! read back by the image and anything else that needs to know what a tarball holds.
//!
//! The JSON is written through `serde_json::Value`, whose objects (without serde_json's
//! `preserve_order` feature) keep their keys sorted: the bytes do not depend on the order the
//! fields are declared in. Reading is lenient: a field a tree made by an older version lacks reads
//! as its default, and the reader checks what it needs.

use anyhow::Result;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The whole of `BUILD-INFO.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct BuildInfo {
    pub python: Source,
    pub openssl: Source,
    pub fips_provider: FipsProvider,
    pub patches: Vec<Patch>,
    pub configure: Configure,
    pub builder_image: BuilderImage,
    /// The architecture the tree is for.
    pub arch: String,
    /// Where the build steps ran: differs from `arch` for a cross-compiled tree.
    pub build_arch: String,
    pub source_date_epoch: u64,
    /// Profile-guided optimization depends on timing: such a build is not reproducible.
    pub reproducible: bool,
    /// Where the SBOM is in the tree, relative to BUILD-INFO.json.
    pub sbom: String,
    /// Every stage of the build with its content key, in the order they ran.
    pub stages: Vec<StageKey>,
    /// The project checkout the build ran from: its recipes, patches and stage scripts.
    pub revision: Revision,
}

/// A git commit of the project, and whether the checkout differed from it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Revision {
    /// Empty when the project is not a git checkout.
    pub git_commit: String,
    /// Files of the checkout were changed or added and not committed.
    pub modified: bool,
}

/// An upstream tarball the tree was built from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Source {
    pub version: String,
    pub file: String,
    pub sha256: String,
    pub license: String,
    /// Set when `file` is not the release's own tarball but carries its tree (a test source):
    /// the tree was then not built as the release's security policy says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub carries: Option<Carried>,
}

/// The release a test source carries, and what the source is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Carried {
    pub release: String,
    pub what: String,
}

impl Source {
    /// The upstream release the tree was built from.
    pub fn release(&self) -> &str {
        self.carries
            .as_ref()
            .map_or(self.version.as_str(), |c| c.release.as_str())
    }
}

/// The release the FIPS provider was built from and where it stands with the CMVP.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct FipsProvider {
    pub source: Source,
    pub cmvp: Cmvp,
}

/// The CMVP standing of the provider's release. In the JSON, a validated one is an object and
/// any other the string [`NOT_VALIDATED`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Cmvp {
    Validated(Certificate),
    #[default]
    NotValidated,
}

/// What `cmvp` says of a release no certificate covers.
pub const NOT_VALIDATED: &str = "not a validated module";

/// A CMVP certificate and its status on the build's date (`SOURCE_DATE_EPOCH`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Certificate {
    pub certificate: String,
    pub standard: String,
    /// The day (`YYYY-MM-DD`) the certificate moves, or moved, to the Historical list.
    pub historical_from: String,
    /// `active` or `historical` (`catalog::CmvpStatus::as_str`).
    pub status: String,
    /// The day (`YYYY-MM-DD`) the status was read on.
    pub status_as_of: String,
}

impl Cmvp {
    /// The certificate number, if a certificate covers the release.
    pub fn certificate(&self) -> Option<&str> {
        match self {
            Cmvp::Validated(c) => Some(&c.certificate),
            Cmvp::NotValidated => None,
        }
    }
}

impl Serialize for Cmvp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Cmvp::Validated(c) => c.serialize(s),
            Cmvp::NotValidated => s.serialize_str(NOT_VALIDATED),
        }
    }
}

impl<'de> Deserialize<'de> for Cmvp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Cmvp, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            Validated(Certificate),
            Text(String),
        }
        match Either::deserialize(d)? {
            Either::Validated(c) => Ok(Cmvp::Validated(c)),
            Either::Text(t) if t == NOT_VALIDATED => Ok(Cmvp::NotValidated),
            Either::Text(t) => Err(serde::de::Error::custom(format!(
                "cmvp is neither a certificate nor \"{NOT_VALIDATED}\": \"{t}\""
            ))),
        }
    }
}

/// A patch applied to the tree: `<minor>/<file>` and the sha256 of its bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Patch {
    pub file: String,
    pub sha256: String,
}

/// The recipe's `[python_build]`: the configure flags (with their reasons) and switches.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Configure {
    pub python: Vec<ConfigureFlag>,
    pub enable_shared: bool,
    pub pgo: bool,
}

/// One configure flag and the reason the recipe passes it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ConfigureFlag {
    pub flag: String,
    pub why: String,
}

/// The image the build steps ran in: the recipe's base image and the builder image's id.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct BuilderImage {
    pub base: String,
    pub id: String,
    /// The base image's id, and the content key `base-image` gave it (empty for a base image
    /// made otherwise): a shared cache holds it under that key.
    pub base_id: String,
    pub base_key: String,
}

/// A stage of the build and its content key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct StageKey {
    pub name: String,
    pub key: String,
    /// Where the stage's output came from in the run that wrote this record: only in the copy
    /// beside the tarball (`<artifact>.build-info.json`), never in the tree's own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
}

/// Where a stage's output came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "from")]
pub enum Origin {
    /// It ran in this run.
    Ran,
    /// The local cache had it.
    Local,
    /// A remote had it: `remote` names the backend, `digest` the bytes that were checked.
    Remote { remote: String, digest: String },
}

impl Origin {
    /// One line for the SBOM: `ran`, `local-cache`, or `registry <name>@<digest>`.
    pub fn describe(&self) -> String {
        match self {
            Origin::Ran => "ran".to_string(),
            Origin::Local => "local-cache".to_string(),
            Origin::Remote { remote, digest } => format!("registry {remote}@{digest}"),
        }
    }
}

/// The paths of the project whose contents a build consumes: a change to any of them that is not
/// committed makes the checkout `modified`.
const BUILD_INPUTS: &[&str] = &["Cargo.toml", "Cargo.lock", "xtask", "recipes", "patches"];

impl Revision {
    /// The commit the project checkout at `root` is at, and whether the paths a build consumes
    /// differ from it; an empty commit when `root` is not a git checkout (or git is missing).
    pub fn of_checkout(root: &std::path::Path) -> Revision {
        let git = |args: &[&str]| {
            std::process::Command::new("git")
                .arg("-C")
                .arg(root)
                .args(args)
                .stdin(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        };
        let Some(commit) = git(&["rev-parse", "--verify", "HEAD"]) else {
            return Revision::default();
        };
        let mut status = vec!["status", "--porcelain", "--"];
        status.extend(BUILD_INPUTS);
        // A checkout whose status cannot be read counts as modified: nothing is claimed.
        let modified = git(&status).is_none_or(|text| !text.is_empty());
        Revision {
            git_commit: commit,
            modified,
        }
    }
}

impl BuildInfo {
    /// The bytes of `BUILD-INFO.json`: pretty-printed, every object's keys sorted.
    pub fn to_json(&self) -> Result<Vec<u8>> {
        Ok(serde_json::to_vec_pretty(&serde_json::to_value(self)?)?)
    }

    pub fn parse(text: &str) -> Result<BuildInfo> {
        Ok(serde_json::from_str(text)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(version: &str, license: &str) -> Source {
        Source {
            version: version.into(),
            file: format!("x-{version}.tar.gz"),
            sha256: "ab".repeat(32),
            license: license.into(),
            carries: None,
        }
    }

    fn sample(cmvp: Cmvp) -> BuildInfo {
        BuildInfo {
            python: source("3.13.15", "PSF-2.0"),
            openssl: source("3.5.7", "Apache-2.0"),
            fips_provider: FipsProvider {
                source: source("3.1.2", "Apache-2.0"),
                cmvp,
            },
            patches: vec![Patch {
                file: "3.13/fips.patch".into(),
                sha256: "cd".repeat(32),
            }],
            configure: Configure {
                python: vec![ConfigureFlag {
                    flag: "--with-lto".into(),
                    why: "speed".into(),
                }],
                enable_shared: true,
                pgo: false,
            },
            builder_image: BuilderImage {
                base: "debian:bookworm".into(),
                id: "sha256:abc".into(),
                base_id: "sha256:def".into(),
                base_key: "ef".repeat(32),
            },
            arch: "aarch64".into(),
            build_arch: "x86_64".into(),
            source_date_epoch: 1_700_000_000,
            reproducible: true,
            sbom: "SBOM.cdx.json".into(),
            stages: vec![
                StageKey {
                    name: "openssl".into(),
                    key: "01".repeat(32),
                    origin: None,
                },
                StageKey {
                    name: "finalize".into(),
                    key: "02".repeat(32),
                    origin: None,
                },
            ],
            revision: Revision {
                git_commit: "1f".repeat(20),
                modified: false,
            },
        }
    }

    /// What the package step wrote before `BuildInfo` existed, built the way it was then.
    fn written_with_json_macro(b: &BuildInfo) -> Vec<u8> {
        use serde_json::json;
        let source = |s: &Source| json!({"version": s.version, "file": s.file, "sha256": s.sha256, "license": s.license});
        let provider = match &b.fips_provider.cmvp {
            Cmvp::Validated(c) => json!({
                "certificate": c.certificate,
                "standard": c.standard,
                "historical_from": c.historical_from,
                "status": c.status,
                "status_as_of": c.status_as_of,
            }),
            Cmvp::NotValidated => json!("not a validated module"),
        };
        let flags: Vec<_> = b
            .configure
            .python
            .iter()
            .map(|f| json!({"flag": f.flag, "why": f.why}))
            .collect();
        let value = json!({
            "python": source(&b.python),
            "openssl": source(&b.openssl),
            "fips_provider": {"source": source(&b.fips_provider.source), "cmvp": provider},
            "patches": b.patches.iter().map(|p| json!({"file": p.file, "sha256": p.sha256})).collect::<Vec<_>>(),
            "configure": {
                "python": flags,
                "enable_shared": b.configure.enable_shared,
                "pgo": b.configure.pgo,
            },
            "builder_image": {
                "base": b.builder_image.base,
                "id": b.builder_image.id,
                "base_id": b.builder_image.base_id,
                "base_key": b.builder_image.base_key,
            },
            "arch": b.arch,
            "build_arch": b.build_arch,
            "source_date_epoch": b.source_date_epoch,
            "reproducible": b.reproducible,
            "sbom": b.sbom,
            "stages": b.stages.iter().map(|d| json!({"name": d.name, "key": d.key})).collect::<Vec<_>>(),
            "revision": {"git_commit": b.revision.git_commit, "modified": b.revision.modified},
        });
        serde_json::to_vec_pretty(&value).unwrap()
    }

    #[test]
    fn the_json_is_what_the_json_macro_wrote_and_reads_back() {
        let validated = Cmvp::Validated(Certificate {
            certificate: "4985".into(),
            standard: "FIPS 140-3".into(),
            historical_from: "2030-03-10".into(),
            status: "active".into(),
            status_as_of: "2023-11-14".into(),
        });
        for cmvp in [validated, Cmvp::NotValidated] {
            let info = sample(cmvp);
            let bytes = info.to_json().unwrap();
            assert_eq!(
                String::from_utf8(bytes.clone()).unwrap(),
                String::from_utf8(written_with_json_macro(&info)).unwrap()
            );
            let back = BuildInfo::parse(std::str::from_utf8(&bytes).unwrap()).unwrap();
            assert_eq!(back, info);
        }
        let text = String::from_utf8(sample(Cmvp::NotValidated).to_json().unwrap()).unwrap();
        assert!(
            text.contains(r#""cmvp": "not a validated module""#),
            "{text}"
        );
    }

    #[test]
    fn a_test_source_says_what_it_carries() {
        let mut info = sample(Cmvp::NotValidated);
        info.fips_provider.source.version = "3.1.2-openssl-src".into();
        info.fips_provider.source.carries = Some(Carried {
            release: "3.1.2".into(),
            what: "a crate".into(),
        });
        let text = String::from_utf8(info.to_json().unwrap()).unwrap();
        assert!(text.contains(r#""release": "3.1.2""#), "{text}");
        let back = BuildInfo::parse(&text).unwrap();
        assert_eq!(back.fips_provider.source.release(), "3.1.2");
        assert_eq!(back.python.release(), "3.13.15");
        assert_eq!(back, info);
    }

    #[test]
    fn an_older_tree_reads_with_defaults_and_a_strange_cmvp_is_refused() {
        let info = BuildInfo::parse(r#"{"python": {"version": "3.12.1"}}"#).unwrap();
        assert_eq!(info.python.version, "3.12.1");
        assert_eq!(info.arch, "");
        assert_eq!(info.fips_provider.cmvp, Cmvp::NotValidated);
        let err = BuildInfo::parse(r#"{"fips_provider": {"cmvp": "pending"}}"#).unwrap_err();
        assert!(err.to_string().contains("pending"), "{err}");
    }
}
