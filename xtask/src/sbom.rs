//! The SBOM: a CycloneDX 1.5 JSON document of what went into the tree, as deterministic as the tree.
//!
//! Every value comes from the build's inputs (catalog entries, patch bytes, the builder image and
//! its package list, hashes of shipped files), the timestamp is SOURCE_DATE_EPOCH, and the serial
//! number is a name-based (v5) UUID of the content, so the same build gives the same bytes.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use sha1::Sha1;
use sha2::{Digest, Sha256};

use crate::catalog::{Recipe, Source};
use crate::digest::hex;

/// A patch applied to CPython: `3.13/fips.patch` and the sha256 of its bytes.
#[derive(Debug, Clone)]
pub struct Patch {
    pub file: String,
    pub sha256: String,
}

/// One package installed in the builder image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    /// `deb` or `rpm`.
    pub family: String,
    pub name: String,
    pub version: String,
    pub arch: String,
}

/// The builder image the stages ran in.
#[derive(Debug, Clone)]
pub struct BuilderImage {
    pub base_image: String,
    /// `sha256:<hex>` (docker) or `<hex>` (podman).
    pub id: String,
    pub packages: Vec<Package>,
}

/// Everything the SBOM says; nothing else reaches it.
pub struct Input<'a> {
    /// The artifact name without `.tar.gz`.
    pub artifact: &'a str,
    pub recipe: &'a Recipe,
    pub patches: Vec<Patch>,
    pub builder: BuilderImage,
    /// sha256 of shipped files, by path below the tree root (see [`shipped_files`]).
    pub files: BTreeMap<String, String>,
    pub arch: &'a str,
    pub source_date_epoch: u64,
    pub reproducible: bool,
    /// The tarballs the tree ships in, once the development one is written.
    pub tarballs: Option<Tarballs>,
}

/// The two tarballs of a build. The runtime one holds the SBOM, so the SBOM inside it cannot
/// carry its sha256: that goes only into the copy beside it ([`add_runtime_sha256`]).
#[derive(Debug, Clone)]
pub struct Tarballs {
    /// `<artifact>.tar.gz`.
    pub runtime: String,
    /// `<artifact>-dev.tar.gz` and its sha256.
    pub dev: String,
    pub dev_sha256: String,
}

/// The bom-ref of the runtime tarball's component.
const RUNTIME_TARBALL: &str = "tarball:runtime";

/// The SBOM beside the tarballs: the one in the tree plus the runtime tarball's sha256 (the
/// serial number stays: it is the same document, completed).
pub fn add_runtime_sha256(bom: &mut Value, sha: &str) {
    let components = bom["components"].as_array_mut().into_iter().flatten();
    for c in components.filter(|c| c["bom-ref"] == RUNTIME_TARBALL) {
        c["hashes"] = json!([sha256(sha)]);
    }
}

/// Records in the SBOM shipped beside the tarball where each stage's output came from this
/// run (`python-fips:stage:<name>` properties of its metadata). The SBOM in the tree cannot say
/// it: two machines, one building and one pulling, must ship the same bytes.
pub fn add_provenance(bom: &mut Value, stages: &[(String, String)]) {
    if let Some(props) = bom["metadata"]["properties"].as_array_mut() {
        props.retain(|p| {
            !p["name"]
                .as_str()
                .unwrap_or_default()
                .starts_with(STAGE_PROPERTY)
        });
        props.extend(
            stages
                .iter()
                .map(|(name, from)| property(&format!("{STAGE_PROPERTY}{name}"), from)),
        );
    }
}

/// The prefix of the properties `add_provenance` writes.
pub const STAGE_PROPERTY: &str = "python-fips:stage:";

/// The shipped files the SBOM hashes, with the component each belongs to.
pub fn shipped_files(recipe: &Recipe) -> Vec<(&'static str, String)> {
    vec![
        ("cpython", format!("bin/python{}", recipe.minor)),
        ("openssl", "lib/libcrypto.so.3".to_string()),
        ("openssl", "lib/libssl.so.3".to_string()),
        ("openssl", "bin/openssl".to_string()),
        ("fips-provider", "lib/ossl-modules/fips.so".to_string()),
    ]
}

/// Parses what `pipeline/packages.sh` writes: `family<TAB>name<TAB>version<TAB>arch` lines.
pub fn parse_packages(tsv: &str) -> Vec<Package> {
    tsv.lines()
        .filter_map(|line| {
            let mut f = line.split('\t');
            Some(Package {
                family: f.next()?.to_string(),
                name: f.next()?.to_string(),
                version: f.next()?.to_string(),
                arch: f.next()?.to_string(),
            })
        })
        .collect()
}

/// The CycloneDX 1.5 document.
pub fn cyclonedx(input: &Input) -> Value {
    let mut bom = json!({
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "version": 1,
        "metadata": metadata(input),
        "components": components(input),
        "dependencies": dependencies(),
    });
    bom["serialNumber"] = serial_number(&bom).into();
    bom
}

/// The document's metadata: the tool, the tree it describes and how it was built.
fn metadata(input: &Input) -> Value {
    let version = input
        .artifact
        .strip_prefix("python-fips-")
        .unwrap_or(input.artifact);
    json!({
        "timestamp": crate::date::rfc3339(input.source_date_epoch),
        "tools": {"components": [{
            "type": "application",
            "name": "python-fips xtask",
            "version": env!("CARGO_PKG_VERSION"),
        }]},
        "component": {
            "type": "application",
            "bom-ref": "python-fips",
            "name": "python-fips",
            "version": version,
            "description": format!("{}.tar.gz: CPython under /opt/python-fips with a FIPS OpenSSL provider", input.artifact),
        },
        "properties": [
            property("python-fips:arch", input.arch),
            property("python-fips:source-date-epoch", &input.source_date_epoch.to_string()),
            property("python-fips:pgo", &input.recipe.python_build.pgo.to_string()),
            property("python-fips:reproducible", &input.reproducible.to_string()),
        ],
    })
}

/// Every component, in the document's order: the sources, the patches, the builder image and,
/// once written, the tarballs.
fn components(input: &Input) -> Vec<Value> {
    let mut components = vec![
        cpython_component(input),
        openssl_component(input),
        provider_component(input),
    ];
    components.extend(patch_components(input));
    components.push(builder_component(&input.builder));
    if let Some(t) = &input.tarballs {
        components.extend(tarball_components(input, t));
    }
    components
}

/// Which component depends on which.
fn dependencies() -> Value {
    json!([
        {"ref": "python-fips", "dependsOn": ["cpython", "openssl", "fips-provider"]},
        {"ref": "cpython", "dependsOn": ["openssl"]},
        {"ref": "openssl", "dependsOn": []},
        {"ref": "fips-provider", "dependsOn": []},
    ])
}

/// The serial number names the content: the same document always gets the same one.
fn serial_number(bom: &Value) -> String {
    let digest = hex(&Sha256::digest(
        serde_json::to_vec(bom).expect("a JSON value serializes"),
    ));
    format!(
        "urn:uuid:{}",
        uuid_v5(NAMESPACE, format!("python-fips sbom {digest}").as_bytes())
    )
}

/// The shipped files of `owner` that were hashed, as file components.
fn file_components(input: &Input, owner: &str) -> Vec<Value> {
    shipped_files(input.recipe)
        .iter()
        .filter(|(o, _)| *o == owner)
        .filter_map(|(_, path)| {
            let sha = input.files.get(path)?;
            Some(json!({
                "type": "file",
                "bom-ref": format!("file:{path}"),
                "name": path,
                "hashes": [sha256(sha)],
            }))
        })
        .collect()
}

/// CPython: its source, its shipped files and the patches applied to it.
fn cpython_component(input: &Input) -> Value {
    let mut cpython = source_component(
        &input.recipe.python,
        "cpython",
        "CPython, the interpreter and standard library",
    );
    cpython["components"] = file_components(input, "cpython").into();
    if !input.patches.is_empty() {
        cpython["pedigree"] = json!({
            "patches": input.patches.iter().map(|p| json!({
                "type": "unofficial",
                "diff": {"url": format!("patches/{}", p.file)},
            })).collect::<Vec<_>>(),
        });
    }
    cpython
}

/// OpenSSL: its source and its shipped files.
fn openssl_component(input: &Input) -> Value {
    let mut openssl = source_component(
        &input.recipe.openssl,
        "openssl",
        "OpenSSL: libcrypto, libssl and the openssl command",
    );
    openssl["components"] = file_components(input, "openssl").into();
    openssl
}

/// The FIPS provider: its source, its CMVP status and its shipped file.
fn provider_component(input: &Input) -> Value {
    let p = &input.recipe.fips_provider;
    let (description, cmvp) = provider_status(p, input.source_date_epoch);
    let mut provider = source_component(p, "fips-provider", &description);
    provider["name"] = "openssl-fips-provider".into();
    provider["properties"]
        .as_array_mut()
        .expect("a source component has properties")
        .extend(cmvp);
    provider["components"] = file_components(input, "fips-provider").into();
    provider
}

/// The provider's description and its `python-fips:cmvp:*` properties: its certificate and
/// the certificate's status on the build's date, or that it has none.
fn provider_status(p: &Source, source_date_epoch: u64) -> (String, Vec<Value>) {
    // The certificate's status on the build's date (SOURCE_DATE_EPOCH, the date a build carries).
    let day = crate::date::day_of(source_date_epoch);
    match &p.cmvp {
        Some(c) => (
            format!(
                "OpenSSL FIPS provider (fips.so) built from OpenSSL {}{}: CMVP certificate #{} ({}), \
                 {} on {day}",
                p.release(),
                carried_by(p),
                c.certificate,
                c.standard,
                p.cmvp_status(&day).as_str()
            ),
            vec![
                property("python-fips:cmvp:status", p.cmvp_status(&day).as_str()),
                property("python-fips:cmvp:certificate", &c.certificate),
                property("python-fips:cmvp:standard", &c.standard),
                property("python-fips:cmvp:historical-from", &c.historical_from),
                property("python-fips:cmvp:status-as-of", &day),
            ],
        ),
        None => (
            format!(
                "OpenSSL FIPS provider (fips.so) built from OpenSSL {}{}: not a validated module \
                 (no CMVP certificate covers this release)",
                p.release(),
                carried_by(p)
            ),
            vec![property(
                "python-fips:cmvp:status",
                "not a validated module",
            )],
        ),
    }
}

/// One file component per patch applied to CPython.
fn patch_components(input: &Input) -> Vec<Value> {
    let python = &input.recipe.python;
    input
        .patches
        .iter()
        .map(|p| {
            json!({
                "type": "file",
                "bom-ref": format!("patch:{}", p.file),
                "name": format!("patches/{}", p.file),
                "version": python.version,
                "description": format!("python-fips patch applied to CPython {}", python.version),
                "scope": "excluded",
                "hashes": [sha256(&p.sha256)],
                "licenses": licenses(env!("CARGO_PKG_LICENSE")),
            })
        })
        .collect()
}

/// The builder image, with its packages as its components.
fn builder_component(b: &BuilderImage) -> Value {
    let image_hex = b.id.strip_prefix("sha256:").unwrap_or(&b.id);
    json!({
        "type": "container",
        "bom-ref": "builder",
        "name": "python-fips-builder",
        "version": &image_hex[..image_hex.len().min(16)],
        "description": format!("the build environment: {} plus the recipe's build dependencies", b.base_image),
        "scope": "excluded",
        "hashes": [sha256(image_hex)],
        "licenses": [{"license": {"name": "various: see the licenses of its packages"}}],
        "properties": [
            property("python-fips:base-image", &b.base_image),
            property("python-fips:image-id", &b.id),
        ],
        "components": b.packages.iter().map(package_component).collect::<Vec<_>>(),
    })
}

/// The runtime and development tarballs; only the development one carries its sha256 here.
fn tarball_components(input: &Input, t: &Tarballs) -> [Value; 2] {
    let r = input.recipe;
    let mut license: Vec<&str> = vec![];
    for s in [&r.python, &r.openssl, &r.fips_provider] {
        if !license.contains(&s.license.as_str()) {
            license.push(&s.license);
        }
    }
    let tarball = |bom_ref: &str, name: &str, what: &str| {
        json!({
            "type": "file",
            "bom-ref": bom_ref,
            "name": name,
            "version": input.artifact.strip_prefix("python-fips-").unwrap_or(input.artifact),
            "description": what,
            "licenses": licenses(&license.join(" AND ")),
        })
    };
    let mut runtime = tarball(
        RUNTIME_TARBALL,
        &t.runtime,
        "the runtime tree: interpreter, standard library, shared libraries, fips.so, the \
         OpenSSL configuration and command; its sha256 is in the SBOM beside it and in its \
         .sha256 file",
    );
    runtime["properties"] = json!([property("python-fips:part", "runtime")]);
    let mut dev = tarball(
        "tarball:dev",
        &t.dev,
        "the development tree, unpacked over the runtime one: headers, static libraries, \
         python3-config data, debug information, the test suite",
    );
    dev["hashes"] = json!([sha256(&t.dev_sha256)]);
    dev["properties"] = json!([property("python-fips:part", "dev")]);
    [runtime, dev]
}

/// The UUID namespace of python-fips SBOM serial numbers (itself `uuid5(URL, "python-fips")`).
const NAMESPACE: [u8; 16] = [
    0xb1, 0x42, 0x3a, 0xc9, 0x33, 0xa4, 0x5b, 0x65, 0x85, 0x36, 0x07, 0xb3, 0x64, 0xe3, 0xc2, 0xf1,
];

/// `, as carried by <what> (not the release tarball)` for a test source; empty otherwise.
fn carried_by(s: &Source) -> String {
    s.carries.as_ref().map_or(String::new(), |c| {
        format!(", as carried by {} (not the release tarball)", c.what)
    })
}

fn source_component(s: &Source, bom_ref: &str, description: &str) -> Value {
    let mut properties = vec![property("python-fips:source-file", &s.file)];
    if let Some(c) = &s.carries {
        // A test source: the release's tree, but not its release tarball.
        properties.push(property("python-fips:source-carries", &c.what));
    }
    json!({
        "type": "library",
        "bom-ref": bom_ref,
        "name": s.name,
        "version": s.release(),
        "description": description,
        "hashes": [sha256(&s.sha256)],
        "licenses": licenses(&s.license),
        "purl": format!("pkg:generic/{}@{}?download_url={}", s.name, encode(&s.version), encode(s.urls.first().map(String::as_str).unwrap_or(""))),
        "externalReferences": s.urls.iter().map(|u| json!({"type": "distribution", "url": u, "hashes": [sha256(&s.sha256)]})).collect::<Vec<_>>(),
        "properties": properties,
    })
}

fn package_component(p: &Package) -> Value {
    let mut c = json!({
        "type": "library",
        "bom-ref": format!("builder:{}:{}", p.family, p.name),
        "name": p.name,
        "version": p.version,
        "scope": "excluded",
    });
    if p.family == "deb" {
        c["purl"] = format!(
            "pkg:deb/debian/{}@{}?arch={}",
            encode(&p.name),
            encode(&p.version),
            encode(&p.arch)
        )
        .into();
    }
    c
}

fn sha256(hex: &str) -> Value {
    json!({"alg": "SHA-256", "content": hex})
}

fn property(name: &str, value: &str) -> Value {
    json!({"name": name, "value": value})
}

/// A single SPDX identifier as `license.id`, anything else as an expression.
fn licenses(spdx: &str) -> Value {
    if spdx
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || ".-+".contains(c))
    {
        json!([{"license": {"id": spdx}}])
    } else {
        json!([{"expression": spdx}])
    }
}

/// Percent-encodes everything but unreserved characters (as package URLs want).
fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A name-based UUID (RFC 9562 version 5: SHA-1 of the namespace and the name).
pub fn uuid_v5(namespace: [u8; 16], name: &[u8]) -> String {
    let mut h = Sha1::new();
    h.update(namespace);
    h.update(name);
    let d = h.finalize();
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    b[6] = (b[6] & 0x0f) | 0x50;
    b[8] = (b[8] & 0x3f) | 0x80;
    let x = hex(&b);
    format!(
        "{}-{}-{}-{}-{}",
        &x[..8],
        &x[8..12],
        &x[12..16],
        &x[16..20],
        &x[20..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{BuilderSpec, Cmvp, PythonBuild, RuntimeSpec};

    fn source(name: &str, version: &str, license: &str, cmvp: Option<Cmvp>) -> Source {
        Source {
            name: name.into(),
            version: version.into(),
            file: format!("{name}-{version}.tar.gz"),
            urls: vec![format!("https://example.invalid/{name}-{version}.tar.gz")],
            sha256: hex(&Sha256::digest(format!("{name}-{version}"))),
            size: None,
            license: license.into(),
            cmvp,
            carries: None,
        }
    }

    fn recipe(provider_cmvp: Option<Cmvp>) -> Recipe {
        Recipe {
            minor: "3.13".into(),
            python: source("cpython", "3.13.15", "PSF-2.0", None),
            openssl: source("openssl", "3.5.7", "Apache-2.0", None),
            fips_provider: source("openssl", "3.1.2", "Apache-2.0", provider_cmvp),
            source_date_epoch: None,
            builder: BuilderSpec {
                base_image: "debian:bookworm".into(),
                apt: vec![],
                dnf: vec![],
            },
            runtime: RuntimeSpec {
                base_image: "debian:bookworm".into(),
            },
            python_build: PythonBuild {
                enable_shared: false,
                pgo: false,
                configure: vec![],
            },
            wheels: Default::default(),
            patches: vec![],
        }
    }

    fn input(recipe: &Recipe) -> Input<'_> {
        let mut files = BTreeMap::new();
        files.insert("lib/ossl-modules/fips.so".to_string(), "ab".repeat(32));
        files.insert("lib/libcrypto.so.3".to_string(), "cd".repeat(32));
        Input {
            artifact: "python-fips-3.13.15-openssl-3.5.7-fips-3.1.2-linux-x86_64",
            recipe,
            patches: vec![Patch {
                file: "3.13/fips.patch".into(),
                sha256: "ef".repeat(32),
            }],
            builder: BuilderImage {
                base_image: "debian:bookworm".into(),
                id: format!("sha256:{}", "01".repeat(32)),
                packages: parse_packages(
                    "deb\tlibc6\t2.36-9+deb12u13\tamd64\ndeb\tgcc-12\t12.2.0-14+deb12u1\tamd64\n",
                ),
            },
            files,
            arch: "x86_64",
            source_date_epoch: 1_785_932_743,
            reproducible: true,
            tarballs: None,
        }
    }

    fn component<'a>(bom: &'a Value, bom_ref: &str) -> &'a Value {
        bom["components"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["bom-ref"] == bom_ref)
            .unwrap_or_else(|| panic!("no component {bom_ref}"))
    }

    #[test]
    fn every_component_has_the_required_fields_and_the_input_hashes() {
        let r = recipe(None);
        let bom = cyclonedx(&input(&r));
        assert_eq!(bom["bomFormat"], "CycloneDX");
        assert_eq!(bom["specVersion"], "1.5");
        assert_eq!(bom["version"], 1);
        assert_eq!(bom["metadata"]["timestamp"], "2026-08-05T12:25:43Z");
        let serial = bom["serialNumber"].as_str().unwrap();
        let uuid = serial.strip_prefix("urn:uuid:").unwrap();
        assert_eq!(uuid.len(), 36);
        assert_eq!(&uuid[14..15], "5", "a version 5 UUID");
        for c in bom["components"].as_array().unwrap() {
            for field in ["type", "name", "version", "hashes", "licenses"] {
                assert!(!c[field].is_null(), "{} lacks {field}", c["bom-ref"]);
            }
            assert_eq!(c["hashes"][0]["alg"], "SHA-256");
            assert_eq!(c["hashes"][0]["content"].as_str().unwrap().len(), 64);
        }
        assert_eq!(
            component(&bom, "cpython")["hashes"][0]["content"],
            r.python.sha256
        );
        assert_eq!(
            component(&bom, "cpython")["licenses"][0]["license"]["id"],
            "PSF-2.0"
        );
        assert_eq!(
            component(&bom, "patch:3.13/fips.patch")["hashes"][0]["content"],
            "ef".repeat(32)
        );
        let provider = component(&bom, "fips-provider");
        assert_eq!(
            provider["components"][0]["name"],
            "lib/ossl-modules/fips.so"
        );
        assert_eq!(
            provider["components"][0]["hashes"][0]["content"],
            "ab".repeat(32)
        );
        let builder = component(&bom, "builder");
        assert_eq!(builder["hashes"][0]["content"], "01".repeat(32));
        assert_eq!(
            builder["components"][0]["purl"],
            "pkg:deb/debian/libc6@2.36-9%2Bdeb12u13?arch=amd64"
        );
    }

    #[test]
    fn provider_names_its_certificate_or_says_it_has_none() {
        let unvalidated = recipe(None);
        let bom = cyclonedx(&input(&unvalidated));
        let provider = component(&bom, "fips-provider");
        assert!(
            provider["description"]
                .as_str()
                .unwrap()
                .contains("not a validated module")
        );
        // The provider keeps its source file beside its CMVP status.
        let props = provider["properties"].as_array().unwrap();
        assert!(props.contains(&property(
            "python-fips:cmvp:status",
            "not a validated module"
        )));
        assert!(props.contains(&property("python-fips:source-file", "openssl-3.1.2.tar.gz")));

        let validated = recipe(Some(Cmvp {
            certificate: "4985".into(),
            standard: "FIPS 140-3".into(),
            historical_from: "2030-03-10".into(),
        }));
        let bom = cyclonedx(&input(&validated));
        let provider = component(&bom, "fips-provider");
        let props = provider["properties"].as_array().unwrap();
        assert!(props.contains(&property("python-fips:cmvp:certificate", "4985")));
        // The input's SOURCE_DATE_EPOCH is 2026-08-05: the certificate is active then.
        assert!(props.contains(&property("python-fips:cmvp:status", "active")));
        assert!(props.contains(&property("python-fips:cmvp:status-as-of", "2026-08-05")));
        assert!(
            provider["description"]
                .as_str()
                .unwrap()
                .contains("certificate #4985")
        );

        let historical = recipe(Some(Cmvp {
            certificate: "4282".into(),
            standard: "FIPS 140-2".into(),
            historical_from: "2026-01-01".into(),
        }));
        let bom = cyclonedx(&input(&historical));
        let provider = component(&bom, "fips-provider");
        let props = provider["properties"].as_array().unwrap();
        assert!(props.contains(&property("python-fips:cmvp:status", "historical")));

        // A test source: the release's version, and what carried its tree, in plain sight.
        let mut carried = validated.clone();
        carried.fips_provider.version = "3.1.2-openssl-src".into();
        carried.fips_provider.carries = Some(crate::catalog::Carries {
            release: "3.1.2".into(),
            dir: "openssl-src-300.1.3+3.1.2/openssl".into(),
            what: "the OpenSSL 3.1.2 tree of a crate".into(),
        });
        let bom = cyclonedx(&input(&carried));
        let provider = component(&bom, "fips-provider");
        assert_eq!(provider["version"], "3.1.2");
        let props = provider["properties"].as_array().unwrap();
        assert!(props.contains(&property(
            "python-fips:source-carries",
            "the OpenSSL 3.1.2 tree of a crate"
        )));
        assert!(
            provider["description"].as_str().unwrap().contains(
                "as carried by the OpenSSL 3.1.2 tree of a crate (not the release tarball)"
            ),
            "{provider:#}"
        );
    }

    #[test]
    fn same_input_same_bytes_and_a_change_changes_the_serial_number() {
        let r = recipe(None);
        let a = serde_json::to_vec_pretty(&cyclonedx(&input(&r))).unwrap();
        let b = serde_json::to_vec_pretty(&cyclonedx(&input(&r))).unwrap();
        assert_eq!(a, b);
        let mut changed = input(&r);
        changed.patches[0].sha256 = "ee".repeat(32);
        let c = cyclonedx(&changed);
        let a: Value = serde_json::from_slice(&a).unwrap();
        assert_ne!(a["serialNumber"], c["serialNumber"]);
    }

    #[test]
    fn uuid_v5_matches_the_rfc_construction() {
        // Python: uuid.uuid5(uuid.NAMESPACE_DNS, "python.org")
        let dns = [
            0x6b, 0xa7, 0xb8, 0x10, 0x9d, 0xad, 0x11, 0xd1, 0x80, 0xb4, 0x00, 0xc0, 0x4f, 0xd4,
            0x30, 0xc8,
        ];
        assert_eq!(
            uuid_v5(dns, b"python.org"),
            "886313e1-3b8a-5372-9b90-0c9aee199e5d"
        );
    }

    #[test]
    fn both_tarballs_are_listed_and_the_runtime_hash_only_beside_the_tree() {
        let recipe = recipe(None);
        let mut input = input(&recipe);
        input.tarballs = Some(Tarballs {
            runtime: "python-fips-x.tar.gz".into(),
            dev: "python-fips-x-dev.tar.gz".into(),
            dev_sha256: "12".repeat(32),
        });
        let in_tree = cyclonedx(&input);
        let runtime = component(&in_tree, "tarball:runtime");
        assert_eq!(runtime["name"], "python-fips-x.tar.gz");
        assert!(runtime["hashes"].is_null(), "{runtime:#}");
        let dev = component(&in_tree, "tarball:dev");
        assert_eq!(dev["hashes"][0]["content"], "12".repeat(32));
        assert_eq!(dev["licenses"][0]["expression"], "PSF-2.0 AND Apache-2.0");
        let mut beside = in_tree.clone();
        add_runtime_sha256(&mut beside, &"34".repeat(32));
        let runtime = component(&beside, "tarball:runtime");
        assert_eq!(runtime["hashes"][0]["alg"], "SHA-256");
        assert_eq!(runtime["hashes"][0]["content"], "34".repeat(32));
        assert_eq!(beside["serialNumber"], in_tree["serialNumber"]);
    }

    #[test]
    fn provenance_says_where_each_stage_came_from_and_replaces_an_earlier_run_s() {
        let recipe = recipe(None);
        let mut bom = cyclonedx(&input(&recipe));
        let before = bom["metadata"]["properties"].as_array().unwrap().len();
        let pulled = crate::store::Origin::Remote {
            remote: "registry.example.com/cache".into(),
            digest: "sha256:ab".into(),
        };
        add_provenance(&mut bom, &[("openssl".into(), "ran".into())]);
        add_provenance(
            &mut bom,
            &[
                ("openssl".into(), pulled.describe()),
                ("python".into(), crate::store::Origin::Local.describe()),
            ],
        );
        let props = bom["metadata"]["properties"].as_array().unwrap();
        assert_eq!(props.len(), before + 2, "{props:#?}");
        assert_eq!(props[before]["name"], "python-fips:stage:openssl");
        assert_eq!(
            props[before]["value"],
            "registry registry.example.com/cache@sha256:ab"
        );
        assert_eq!(props[before + 1]["value"], "local-cache");
    }
}
