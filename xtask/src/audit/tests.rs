//! Tests of the audit's ELF classification, on small shared objects the host gcc makes.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::*;
use crate::testutil::TempDir;

/// Compiles `source` into a shared object `dir/name` with `args` (soname, rpath, libraries).
fn shared(dir: &Path, name: &str, source: &str, args: &[&str]) -> PathBuf {
    let c = dir.join(format!("{name}.c"));
    std::fs::write(&c, source).unwrap();
    let out = dir.join(name);
    let status = Command::new("gcc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(&out)
        .arg(&c)
        .args(args)
        .status()
        .expect("gcc is installed");
    assert!(status.success(), "gcc failed on {name}");
    out
}

/// C source of a library that defines the first `n` core OpenSSL functions (with `binding`,
/// `""` or `"static "`) and holds `version` as a string.
fn crypto_source(n: usize, binding: &str, version: &str) -> String {
    let mut s = format!("const char *version_text = \"{version}\";\n");
    for f in &CORE_FUNCTIONS[..n] {
        s.push_str(&format!("{binding}int {f}(void) {{ return 1; }}\n"));
    }
    if n > 0 {
        let used: Vec<&str> = CORE_FUNCTIONS[..n].to_vec();
        s.push_str(&format!(
            "int (*keep[])(void) = {{ {} }};\n",
            used.join(", ")
        ));
    }
    s
}

fn whats(data: &[u8], installed: Option<&str>) -> Vec<String> {
    classify(data, installed)
        .into_iter()
        .map(|(w, _)| w)
        .collect()
}

#[test]
fn version_texts_are_the_libraries_own_not_any_mention() {
    let found = |s: &str| crypto_versions(s.as_bytes());
    assert_eq!(
        found("x\0OpenSSL 3.5.7 1 Jul 2025\0"),
        vec!["OpenSSL 3.5.7"]
    );
    assert_eq!(found("OpenSSL 1.1.1w  11 Sep 2023"), vec!["OpenSSL 1.1.1w"]);
    assert_eq!(found("LibreSSL 3.8.2\0"), vec!["LibreSSL 3.8.2"]);
    assert_eq!(
        found("OpenSSL 1.1.1 (compatible; BoringSSL)"),
        vec!["BoringSSL"]
    );
    // Messages that name OpenSSL are not a copy of it.
    assert!(found("requires OpenSSL 3.0 or later").is_empty());
    assert!(found("OpenSSL 3.5.7 is too old").is_empty());
    assert!(found("built against OpenSSL %s").is_empty());
}

#[test]
fn sonames_of_crypto_libraries_plain_and_renamed() {
    assert_eq!(crypto_soname("libcrypto.so.3"), Some(true));
    assert_eq!(crypto_soname("libssl.so.1.1"), Some(true));
    assert_eq!(crypto_soname("libssl-8c5e1c0e.so.3"), Some(false));
    assert_eq!(crypto_soname("libcrypto-9f3a2b1c.so.1.1"), Some(false));
    assert_eq!(crypto_soname("libc.so.6"), None);
    assert_eq!(crypto_soname("libssh2.so.1"), None);
    assert_eq!(crypto_soname("libcryptsetup.so.12"), None);
}

#[test]
fn static_crypto_is_found_by_symbols_and_version_but_not_in_the_trees_own_libcrypto() {
    let dir = TempDir::new("audit-static");
    let lib = shared(
        dir.path(),
        "_rust.abi3.so",
        &crypto_source(10, "", "OpenSSL 4.0.3 7 Apr 2026"),
        &[],
    );
    let data = std::fs::read(&lib).unwrap();
    let found = whats(
        &data,
        Some("/venv/lib/python3.13/site-packages/x/_rust.abi3.so"),
    );
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].contains("OpenSSL 4.0.3 linked in"), "{found:?}");
    assert!(found[0].contains("defines 10 of 10 core"), "{found:?}");

    // The same bytes as the tree's libcrypto are the crypto everything should use.
    assert!(whats(&data, Some("/opt/python-fips/lib/libcrypto.so.3")).is_empty());
    assert!(whats(&data, Some("/opt/python-fips/lib/ossl-modules/fips.so")).is_empty());
    // The provider release's static openssl, kept for fipsinstall alone, is the tree's too.
    assert!(whats(&data, Some("/opt/python-fips/libexec/openssl-fipsinstall")).is_empty());
    assert!(!whats(&data, Some("/opt/python-fips/libexec/other-tool")).is_empty());

    // Symbols alone are enough, also local ones (a static link hides them that way); a
    // version string alone too; a file defining just two of them is not a crypto library.
    for (name, binding) in [("global.so", ""), ("local.so", "static ")] {
        let lib = shared(dir.path(), name, &crypto_source(3, binding, "none"), &[]);
        let found = whats(&std::fs::read(&lib).unwrap(), None);
        assert!(
            found.len() == 1 && found[0].contains("OpenSSL-compatible library"),
            "{name}: {found:?}"
        );
    }
    let versioned = shared(
        dir.path(),
        "v.so",
        &crypto_source(0, "", "LibreSSL 3.8.2"),
        &[],
    );
    let found = whats(&std::fs::read(&versioned).unwrap(), None);
    assert!(
        found.len() == 1 && found[0].starts_with("LibreSSL 3.8.2 linked in"),
        "{found:?}"
    );
    let few = shared(dir.path(), "few.so", &crypto_source(2, "", "none"), &[]);
    assert!(whats(&std::fs::read(&few).unwrap(), None).is_empty());
    // CPython's `_hashlib` defines static helpers named `EVP_copy`, `EVP_update`...: not these.
    let helpers = "static int EVP_copy(void) { return 0; }\nstatic int EVP_update(void) { return 0; }\n\
                   int (*keep[])(void) = { EVP_copy, EVP_update };\n";
    let helpers = shared(dir.path(), "helpers.so", helpers, &[]);
    assert!(whats(&std::fs::read(&helpers).unwrap(), None).is_empty());
}

#[test]
fn needed_libcrypto_must_resolve_into_the_tree() {
    let dir = TempDir::new("audit-needed");
    let d = dir.path();
    let fake = shared(
        d,
        "libcrypto.so.3",
        "int EVP_MD_fetch(void) { return 0; }\n",
        &["-Wl,-soname,libcrypto.so.3"],
    );
    std::fs::copy(&fake, d.join("libcrypto.so")).unwrap();
    let user = "extern int EVP_MD_fetch(void); int use(void) { return EVP_MD_fetch(); }\n";
    let link = |name: &str, rpath: Option<&str>| {
        let mut args = vec![format!("-L{}", d.display()), "-lcrypto".to_string()];
        if let Some(r) = rpath {
            args.push(format!("-Wl,-rpath,{r}"));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        std::fs::read(shared(d, name, user, &args)).unwrap()
    };
    let at = Some(
        "/opt/python-fips/lib/python3.13/site-packages/cryptography/hazmat/bindings/_rust.abi3.so",
    );

    let into_tree = link("tree.so", Some("/opt/python-fips/lib"));
    assert!(whats(&into_tree, at).is_empty());
    // The headers' version text in a file that links libcrypto (cryptography exports
    // OPENSSL_VERSION_TEXT) is not a copy of the library.
    let header_text = format!("{user}const char *text = \"OpenSSL 3.5.7 9 Jun 2026\";\n");
    let args = [
        format!("-L{}", d.display()),
        "-lcrypto".to_string(),
        "-Wl,-rpath,/opt/python-fips/lib".to_string(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let with_text = std::fs::read(shared(d, "text.so", &header_text, &args)).unwrap();
    assert!(whats(&with_text, at).is_empty());

    let none = link("none.so", None);
    let found = whats(&none, at);
    assert!(
        found.len() == 1 && found[0].contains("NEEDED libcrypto.so.3 without RUNPATH"),
        "{found:?}"
    );

    let system_first = link("system.so", Some("/usr/lib:/opt/python-fips/lib"));
    let found = whats(&system_first, at);
    assert!(
        found.len() == 1 && found[0].contains("searches /usr/lib before the tree"),
        "{found:?}"
    );

    // $ORIGIN counts where the file is installed: into the tree from bin/, not from a wheel.
    let origin = link("origin.so", Some("$ORIGIN/../lib"));
    assert!(whats(&origin, Some("/opt/python-fips/bin/tool")).is_empty());
    let found = whats(&origin, None);
    assert!(
        found.len() == 1 && found[0].contains("does not lead into /opt/python-fips/lib"),
        "{found:?}"
    );

    // A renamed copy (what auditwheel makes of a bundled library) is always a finding.
    let renamed = shared(
        d,
        "libcrypto-9f3a2b1c.so.3",
        "int EVP_MD_fetch(void) { return 0; }\n",
        &["-Wl,-soname,libcrypto-9f3a2b1c.so.3"],
    );
    std::fs::copy(&renamed, d.join("libcrypto-9f3a2b1c.so")).unwrap();
    let args = [
        format!("-L{}", d.display()),
        "-lcrypto-9f3a2b1c".to_string(),
        "-Wl,-rpath,$ORIGIN/../psycopg2_binary.libs".to_string(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let bundled = std::fs::read(shared(d, "bundled.so", user, &args)).unwrap();
    let found = whats(&bundled, at);
    assert!(
        found.len() == 1 && found[0].contains("renamed copy"),
        "{found:?}"
    );
}

/// The system's own libcrypto, a real OpenSSL, is a finding anywhere but in the tree.
#[test]
fn the_systems_real_libcrypto_is_found_outside_the_tree() {
    let out = Command::new("sh")
        .args([
            "-c",
            "ldconfig -p | awk '$1 == \"libcrypto.so.3\" { print $NF; exit }'",
        ])
        .output()
        .unwrap();
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(!path.is_empty(), "this machine has no libcrypto.so.3");
    let report = audit_path(Path::new(&path)).unwrap();
    assert_eq!(report.elf_files, 1);
    assert_eq!(report.findings.len(), 1, "{:?}", report.findings);
    assert!(
        report.findings[0].what.starts_with("OpenSSL 3."),
        "{:?}",
        report.findings
    );
    assert!(report.ensure_clean().is_err());
}

#[test]
fn a_wheel_is_read_member_by_member_and_a_clean_dir_says_so() {
    let dir = TempDir::new("audit-wheel");
    let d = dir.path();
    let pkg = d.join("pkg/cryptography/hazmat/bindings");
    std::fs::create_dir_all(&pkg).unwrap();
    shared(
        &pkg,
        "_rust.abi3.so",
        &crypto_source(10, "", "OpenSSL 4.0.3 7 Apr 2026"),
        &[],
    );
    std::fs::write(d.join("pkg/cryptography/__init__.py"), "").unwrap();
    let wheel = d.join("cryptography-50.0.2-cp311-abi3-manylinux_2_34_x86_64.whl");
    // Python's zipfile writes deflated members, as wheels have them.
    let status = Command::new("python3")
        .args(["-c", "import sys, zipfile, pathlib\nroot = pathlib.Path(sys.argv[2])\nwith zipfile.ZipFile(sys.argv[1], 'w', zipfile.ZIP_DEFLATED) as z:\n    for p in sorted(root.rglob('*')):\n        z.write(p, p.relative_to(root))\n"])
        .arg(&wheel)
        .arg(d.join("pkg"))
        .status()
        .unwrap();
    assert!(status.success());

    let report = audit_path(&wheel).unwrap();
    assert_eq!(report.elf_files, 1);
    assert_eq!(report.findings.len(), 1, "{:?}", report.findings);
    let f = &report.findings[0];
    assert_eq!(f.package, "cryptography");
    assert!(
        f.file
            .ends_with(".whl:cryptography/hazmat/bindings/_rust.abi3.so"),
        "{f:?}"
    );
    let table = render(&report);
    assert!(
        table.contains("1 finding(s) in 1 of the 1 ELF files"),
        "{table}"
    );

    // A directory holding the wheel finds the same; one without ELF files is clean in one line.
    assert_eq!(audit_path(d).unwrap().findings.len(), 2);
    let clean = TempDir::new("audit-clean");
    std::fs::write(clean.path().join("a.py"), "print()\n").unwrap();
    let report = audit_path(clean.path()).unwrap();
    assert!(report.ensure_clean().is_ok());
    let table = render(&report);
    assert_eq!(table.lines().count(), 1, "{table}");
    assert!(
        table.starts_with("clean: none of the 0 ELF files"),
        "{table}"
    );
}

#[test]
fn packages_are_named_from_their_site_packages_directory() {
    let p = |s: &str| package_of(s);
    assert_eq!(
        p("/v/lib/python3.13/site-packages/cryptography/hazmat/bindings/_rust.abi3.so"),
        "cryptography"
    );
    assert_eq!(
        p("/v/lib/python3.13/site-packages/psycopg2_binary.libs/libssl-8c5e1c0e.so.3"),
        "psycopg2_binary"
    );
    assert_eq!(
        p("/usr/lib/python3/dist-packages/_cffi_backend.cpython-311-x86_64-linux-gnu.so"),
        "_cffi_backend"
    );
    assert_eq!(
        p("/opt/python-fips/lib/python3.13/lib-dynload/_ssl.so"),
        "python-fips"
    );
    assert_eq!(p("/usr/lib/x86_64-linux-gnu/libcrypto.so.3"), "-");
}

/// Writes `value` little-endian at `at` in `out`.
fn put(out: &mut [u8], at: usize, value: u64, width: usize) {
    out[at..at + width].copy_from_slice(&value.to_le_bytes()[..width]);
}

/// Pads `out` to a multiple of 8 bytes.
fn pad8(out: &mut Vec<u8>) {
    out.resize(out.len().next_multiple_of(8), 0);
}

/// Appends a dynamic array: `entries` (tag, value), then `tail`, 16 bytes each.
fn push_dynamic(out: &mut Vec<u8>, entries: &[(u64, u64)], tail: &[(u64, u64)]) {
    for (tag, value) in entries.iter().chain(tail) {
        out.extend(tag.to_le_bytes());
        out.extend(value.to_le_bytes());
    }
}

/// A minimal x86-64 shared object laid out as a linker lays one out: one `PT_LOAD` of the whole
/// file, a `PT_DYNAMIC` array with `needed` and `runpath`, and section headers whose `.dynamic`
/// section is that array, or, with `decoy`, another array naming only those libraries.
fn tiny_elf(needed: &[&str], runpath: Option<&str>, decoy: Option<&[&str]>) -> Vec<u8> {
    const STRTAB: usize = 64 + 2 * 56;
    let mut strtab = vec![0u8];
    let mut string = |s: &str| {
        let at = strtab.len() as u64;
        strtab.extend(s.as_bytes());
        strtab.push(0);
        at
    };
    let mut real: Vec<(u64, u64)> = needed.iter().map(|n| (1, string(n))).collect();
    real.extend(runpath.map(|r| (29, string(r))));
    let fake: Option<Vec<(u64, u64)>> =
        decoy.map(|names| names.iter().map(|n| (1, string(n))).collect());
    let tail = [(5, STRTAB as u64), (10, strtab.len() as u64), (0, 0)];
    let mut out = vec![0u8; STRTAB];
    out.extend(&strtab);
    pad8(&mut out);
    let real_at = out.len();
    push_dynamic(&mut out, &real, &tail);
    let real_len = out.len() - real_at;
    let (section_at, section_len) = match fake {
        None => (real_at, real_len),
        Some(fake) => {
            let at = out.len();
            push_dynamic(&mut out, &fake, &tail);
            (at, out.len() - at)
        }
    };
    let names = b"\0.dynstr\0.dynamic\0.shstrtab\0";
    let names_at = out.len();
    out.extend(names);
    pad8(&mut out);
    let shoff = out.len();
    // (name, type, flags, offset = address, size, link, entry size)
    let sections = [
        (0, 0, 0, 0, 0, 0, 0),
        (1, 3, 2, STRTAB, strtab.len(), 0, 0),
        (9, 6, 3, section_at, section_len, 1, 16),
        (18, 3, 0, names_at, names.len(), 0, 0),
    ];
    for (name, kind, flags, offset, size, link, entsize) in sections {
        let at = out.len();
        out.resize(at + 64, 0);
        put(&mut out, at, name, 4);
        put(&mut out, at + 4, kind, 4);
        put(&mut out, at + 8, flags, 8);
        put(
            &mut out,
            at + 16,
            if flags & 2 != 0 { offset as u64 } else { 0 },
            8,
        );
        put(&mut out, at + 24, offset as u64, 8);
        put(&mut out, at + 32, size as u64, 8);
        put(&mut out, at + 40, link, 4);
        put(&mut out, at + 48, 1, 8);
        put(&mut out, at + 56, entsize, 8);
    }
    let total = out.len() as u64;
    out[..8].copy_from_slice(b"\x7fELF\x02\x01\x01\x00");
    for (at, value, width) in [
        (16, 3, 2),            // ET_DYN
        (18, 62, 2),           // EM_X86_64
        (20, 1, 4),            // EV_CURRENT
        (32, 64, 8),           // e_phoff
        (40, shoff as u64, 8), // e_shoff
        (52, 64, 2),           // e_ehsize
        (54, 56, 2),           // e_phentsize
        (56, 2, 2),            // e_phnum
        (58, 64, 2),           // e_shentsize
        (60, 4, 2),            // e_shnum
        (62, 3, 2),            // e_shstrndx
    ] {
        put(&mut out, at, value, width);
    }
    // PT_LOAD of the whole file at address 0, then PT_DYNAMIC.
    let segments = [
        (1, 0, total, 0x1000),
        (2, real_at as u64, real_len as u64, 8),
    ];
    for (i, (kind, offset, size, align)) in segments.into_iter().enumerate() {
        let at = 64 + i * 56;
        put(&mut out, at, kind, 4);
        put(&mut out, at + 4, 6, 4);
        for field in [8, 16, 24] {
            put(&mut out, at + field, offset, 8);
        }
        put(&mut out, at + 32, size, 8);
        put(&mut out, at + 40, size, 8);
        put(&mut out, at + 48, align, 8);
    }
    out
}

/// `data` with `e_shoff`, `e_shnum` and `e_shstrndx` zeroed: the loader never reads them.
fn without_section_headers(mut data: Vec<u8>) -> Vec<u8> {
    data[40..48].fill(0);
    data[60..64].fill(0);
    data
}

/// A zip entry as its central directory record describes it.
struct ZipMember {
    name: String,
    /// The bytes stored: deflated (method 8) or as they are (method 0).
    raw: Vec<u8>,
    method: u16,
    /// The uncompressed size the record claims.
    size: u64,
}

/// `bytes` deflated, with its true size.
fn deflated(name: &str, bytes: &[u8]) -> ZipMember {
    use std::io::Write;
    let mut encoder = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).unwrap();
    ZipMember {
        name: name.into(),
        raw: encoder.finish().unwrap(),
        method: 8,
        size: bytes.len() as u64,
    }
}

/// Appends a zip record of `len` bytes, zero but for its `signature`; returns where it starts.
fn zip_record(out: &mut Vec<u8>, signature: &[u8; 4], len: usize) -> usize {
    let at = out.len();
    out.resize(at + len, 0);
    out[at..at + 4].copy_from_slice(signature);
    at
}

/// Puts `m`'s method, stored and uncompressed sizes and the length of `name` where a local or
/// central record keeps them, from `at` on.
fn put_member(out: &mut [u8], at: usize, m: &ZipMember, name: &str) {
    put(out, at, m.method.into(), 2);
    put(out, at + 10, m.raw.len() as u64, 4);
    put(out, at + 14, m.size, 4);
    put(out, at + 18, name.len() as u64, 2);
}

/// A zip archive of `members`, plus one more central directory record for each
/// (member index, name) of `aliases`, pointing at that member's local header.
fn zip_archive(members: &[ZipMember], aliases: &[(usize, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut locals = Vec::new();
    for m in members {
        locals.push(out.len() as u64);
        let at = zip_record(&mut out, b"PK\x03\x04", 30);
        put_member(&mut out, at + 8, m, &m.name);
        out.extend(m.name.as_bytes());
        out.extend(&m.raw);
    }
    let directory = out.len() as u64;
    let records = (0..members.len())
        .map(|i| (i, members[i].name.as_str()))
        .chain(aliases.iter().copied());
    let mut count = 0;
    for (i, name) in records {
        let at = zip_record(&mut out, b"PK\x01\x02", 46);
        put_member(&mut out, at + 10, &members[i], name);
        put(&mut out, at + 42, locals[i], 4);
        out.extend(name.as_bytes());
        count += 1;
    }
    let size = out.len() as u64 - directory;
    let at = zip_record(&mut out, b"PK\x05\x06", 22);
    put(&mut out, at + 8, count, 2);
    put(&mut out, at + 10, count, 2);
    put(&mut out, at + 12, size, 4);
    put(&mut out, at + 16, directory, 4);
    out
}

const SSL_MODULE: &str =
    "/opt/python-fips/lib/python3.13/lib-dynload/_ssl.cpython-313-x86_64-linux-gnu.so";

/// E2's repro: `_ssl` linking libcrypto with its section headers zeroed still loads, as the
/// loader reads only the program headers; audit must see its NEEDED and not call it clean.
#[test]
fn a_module_without_section_headers_is_read_as_the_loader_reads_it() {
    let ssl = tiny_elf(&["libcrypto.so.3", "libc.so.6"], None, None);
    let found = whats(&ssl, Some(SSL_MODULE));
    assert!(
        found.len() == 1 && found[0].contains("NEEDED libcrypto.so.3 without RUNPATH"),
        "{found:?}"
    );
    let found = whats(&without_section_headers(ssl), Some(SSL_MODULE));
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(
        found[0].starts_with("cannot be audited: ") && found[0].contains("no section headers"),
        "{found:?}"
    );
    assert!(
        found[1].contains("NEEDED libcrypto.so.3 without RUNPATH"),
        "{found:?}"
    );

    // Even when its libcrypto is the tree's, a file whose symbols cannot be read is no clean file.
    let into_tree = tiny_elf(&["libcrypto.so.3"], Some("/opt/python-fips/lib"), None);
    assert!(whats(&into_tree, Some(SSL_MODULE)).is_empty());
    let dir = TempDir::new("audit-no-sections");
    let file = dir.path().join("_ssl.so");
    std::fs::write(&file, without_section_headers(into_tree)).unwrap();
    let report = audit_path(&file).unwrap();
    assert_eq!(report.findings.len(), 1, "{:?}", report.findings);
    assert!(report.findings[0].what.starts_with("cannot be audited: "));
    let err = report.ensure_clean().unwrap_err().to_string();
    assert!(
        err.contains("1 of them are files audit cannot read"),
        "{err}"
    );
}

/// The section headers may name another dynamic array than the one the loader reads.
#[test]
fn needed_comes_from_pt_dynamic_not_from_the_dynamic_section() {
    let decoyed = tiny_elf(&["libcrypto.so.3"], None, Some(&["libc.so.6"]));
    let found = whats(&decoyed, Some(SSL_MODULE));
    assert!(
        found.len() == 1 && found[0].contains("NEEDED libcrypto.so.3 without RUNPATH"),
        "{found:?}"
    );
    let decoyed = tiny_elf(&["libc.so.6"], Some("/usr/lib"), Some(&["libcrypto.so.3"]));
    assert!(whats(&decoyed, Some(SSL_MODULE)).is_empty());
}

#[test]
fn truncated_and_header_only_elf_files_cannot_be_audited() {
    let whole = tiny_elf(&["libc.so.6"], None, None);
    assert!(whats(&whole, None).is_empty());
    let dir = TempDir::new("audit-truncated");
    let real = std::fs::read(shared(
        dir.path(),
        "real.so",
        "int f(void) { return 1; }\n",
        &[],
    ))
    .unwrap();
    assert!(whats(&real, None).is_empty());
    // A debug file (`objcopy --only-keep-debug`, as finalize makes them) keeps the program
    // headers but not the bytes; the loader skips its empty PT_DYNAMIC, and so does audit.
    let debug = dir.path().join("real.debug");
    let status = Command::new("objcopy")
        .arg("--only-keep-debug")
        .arg(dir.path().join("real.so"))
        .arg(&debug)
        .status()
        .expect("objcopy (binutils) is installed");
    assert!(status.success());
    let debug = std::fs::read(&debug).unwrap();
    assert_eq!(elf::parse(&debug).unwrap(), None);
    assert!(whats(&debug, None).is_empty());
    let cases = [
        ("header only", &whole[..64]),
        ("cut in its dynamic array", &whole[..whole.len() / 2]),
        ("one byte short", &whole[..whole.len() - 1]),
        ("a real one cut in half", &real[..real.len() / 2]),
        ("a real header only", &real[..64]),
        ("a header cut short", &real[..20]),
    ];
    for (label, data) in cases {
        let found = whats(data, None);
        assert!(
            found.len() == 1 && found[0].starts_with("cannot be audited: "),
            "{label}: {found:?}"
        );
    }

    // The same holds for a wheel's member.
    let wheel = dir.path().join("pkg-1.0-cp313-cp313-linux_x86_64.whl");
    let archive = zip_archive(
        &[
            deflated("pkg/__init__.py", b""),
            deflated("pkg/_fast.so", &whole[..64]),
        ],
        &[],
    );
    std::fs::write(&wheel, archive).unwrap();
    let report = audit_path(&wheel).unwrap();
    assert_eq!(report.elf_files, 1);
    assert_eq!(report.findings.len(), 1, "{:?}", report.findings);
    assert!(report.findings[0].file.ends_with(".whl:pkg/_fast.so"));
    assert!(report.findings[0].what.starts_with("cannot be audited: "));
}

/// Caps small enough for a test to pass them cheaply.
const SMALL: Limits = Limits {
    file: 1 << 20,
    wheel: 3 << 20,
};

/// A clean ELF file of `size` bytes: a tiny shared object followed by zeros.
fn padded_elf(size: usize) -> Vec<u8> {
    let mut data = tiny_elf(&["libc.so.6"], None, None);
    data.resize(size, 0);
    data
}

/// The error, with its causes, of auditing `wheel` within `SMALL`; the audit must fail.
fn refused_small(wheel: &Path) -> String {
    format!("{:#}", audit_path_within(wheel, SMALL).unwrap_err())
}

fn write_wheel(dir: &Path, members: &[ZipMember], aliases: &[(usize, &str)]) -> PathBuf {
    let wheel = dir.join("pkg-1.0-cp313-cp313-linux_x86_64.whl");
    std::fs::write(&wheel, zip_archive(members, aliases)).unwrap();
    wheel
}

/// E3: an ELF member inflating past the cap is a finding, whatever its record claims, and
/// is never inflated further.
#[test]
fn a_wheel_member_inflating_past_the_cap_is_a_finding() {
    let dir = TempDir::new("audit-member-cap");
    let big = padded_elf(2 << 20);
    let mut lying = deflated("pkg/_lying.so", &big);
    lying.size = 4096;
    let members = [
        deflated("pkg/_honest.so", &big),
        lying,
        deflated("pkg/_small.so", &padded_elf(4096)),
    ];
    let wheel = write_wheel(dir.path(), &members, &[]);
    let report = audit_path_within(&wheel, SMALL).unwrap();
    assert_eq!(report.elf_files, 3);
    let files: Vec<&str> = report.findings.iter().map(|f| f.file.as_str()).collect();
    assert_eq!(files.len(), 2, "{:?}", report.findings);
    assert!(files[0].ends_with(":pkg/_honest.so") && files[1].ends_with(":pkg/_lying.so"));
    for f in &report.findings {
        assert!(
            f.what.starts_with("cannot be audited: ") && f.what.contains("more than 1 MiB"),
            "{f:?}"
        );
    }
}

/// E3: the 40 central directory records pointing at one stream, and a member whose
/// data runs into the next one, are refused.
#[test]
fn central_directory_records_sharing_bytes_are_refused() {
    let dir = TempDir::new("audit-overlap");
    let member = deflated("pkg/_a.so", &padded_elf(4096));
    let aliases: Vec<String> = (1..40).map(|i| format!("pkg/_a{i}.so")).collect();
    let aliases: Vec<(usize, &str)> = aliases.iter().map(|n| (0, n.as_str())).collect();
    let wheel = write_wheel(dir.path(), &[member], &aliases);
    let err = refused_small(&wheel);
    assert!(err.contains("overlap"), "{err}");
    assert!(
        err.contains("pkg/_a.so") && err.contains("pkg/_a1.so"),
        "{err}"
    );

    let mut first = deflated("pkg/_a.so", &padded_elf(4096));
    let second = deflated("pkg/_b.so", &padded_elf(4096));
    first.raw.extend(&second.raw[..10]);
    let mut archive = zip_archive(&[first, second], &[]);
    // The first record claims 10 bytes of the second member's local header as its own data.
    let record = archive.len() - 22 - 2 * 46 - "pkg/_a.so".len() - "pkg/_b.so".len();
    let claimed = u32::from_le_bytes(archive[record + 20..record + 24].try_into().unwrap()) + 40;
    put(&mut archive, record + 20, claimed.into(), 4);
    let wheel = dir.path().join("runs-on-1.0-py3-none-any.whl");
    std::fs::write(&wheel, archive).unwrap();
    let err = refused_small(&wheel);
    assert!(err.contains("overlap"), "{err}");
}

/// E3: the ELF members of one wheel inflate to at most the total cap.
#[test]
fn a_wheel_whose_elf_members_inflate_past_the_total_cap_is_refused() {
    let dir = TempDir::new("audit-total-cap");
    let members: Vec<ZipMember> = (0..5)
        .map(|i| deflated(&format!("pkg/_m{i}.so"), &padded_elf(900 << 10)))
        .collect();
    let wheel = write_wheel(dir.path(), &members, &[]);
    let err = refused_small(&wheel);
    assert!(err.contains(&wheel.display().to_string()), "{err}");
    assert!(err.contains("more than 3 MiB"), "{err}");
}

/// E3: members that are not ELF files are not inflated past their first bytes, so they count
/// nothing towards the total cap.
#[test]
fn members_that_are_not_elf_are_not_inflated() {
    let dir = TempDir::new("audit-not-elf");
    let members = [
        deflated("pkg/data.bin", &vec![0u8; 4 << 20]),
        deflated("pkg/_small.so", &padded_elf(4096)),
    ];
    let wheel = write_wheel(dir.path(), &members, &[]);
    let limits = Limits {
        file: 1 << 20,
        wheel: 64 << 10,
    };
    let report = audit_path_within(&wheel, limits).unwrap();
    assert_eq!(report.elf_files, 1);
    assert!(report.findings.is_empty(), "{:?}", report.findings);
}

/// E11: a FIFO is refused at once, not read (which waits for a writer forever).
#[test]
fn audit_refuses_a_fifo_without_waiting_for_a_writer() {
    let dir = TempDir::new("audit-fifo");
    let fifo = dir.path().join("_ssl.so");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let (tx, rx) = std::sync::mpsc::channel();
    let path = fifo.clone();
    std::thread::spawn(move || tx.send(audit_path(&path).map_err(|e| format!("{e:#}"))));
    let outcome = rx.recv_timeout(std::time::Duration::from_secs(10));
    if outcome.is_err() {
        // Let the blocked reader go before failing.
        drop(std::fs::OpenOptions::new().write(true).open(&fifo));
    }
    let err = outcome
        .expect("audit of a FIFO did not return within 10 s")
        .unwrap_err();
    assert!(err.contains("not a regular file"), "{err}");
    assert!(err.contains("_ssl.so"), "{err}");
}

/// E11: a device is refused, not read until memory runs out.
#[test]
fn audit_refuses_a_device() {
    let err = format!("{:#}", audit_path(Path::new("/dev/zero")).unwrap_err());
    assert!(err.contains("/dev/zero is not a regular file"), "{err}");
}

/// E11: an ELF file larger than the cap is a finding and is not read, given directly, in a
/// directory or in an image's file system.
#[test]
fn an_elf_file_over_the_cap_is_a_finding_not_read() {
    let dir = TempDir::new("audit-file-cap");
    let file = dir.path().join("_big.so");
    std::fs::write(&file, tiny_elf(&["libc.so.6"], None, None)).unwrap();
    // Sparse: no disk is spent on it.
    std::fs::File::options()
        .write(true)
        .open(&file)
        .unwrap()
        .set_len(2 << 20)
        .unwrap();
    let check = |report: &Report| {
        assert_eq!(report.elf_files, 1);
        assert_eq!(report.findings.len(), 1, "{:?}", report.findings);
        let what = &report.findings[0].what;
        assert!(
            what.starts_with("cannot be audited: ") && what.contains("more than 1 MiB"),
            "{what}"
        );
    };
    check(&audit_path_within(&file, SMALL).unwrap());
    check(&audit_path_within(dir.path(), SMALL).unwrap());

    let mut tar = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(2 << 20);
    header.set_mode(0o755);
    let data = padded_elf(2 << 20);
    tar.append_data(&mut header, "opt/python-fips/lib/_big.so", data.as_slice())
        .unwrap();
    let stream = tar.into_inner().unwrap();
    let mut scanner = Scanner::new("image", SMALL);
    scanner.scan_tar(stream.as_slice()).unwrap();
    check(&scanner.report);
}

/// An x86-64 library of an in-memory root, needing `needed`, with `runpath` as its RUNPATH.
fn dynamic(needed: &[&str], runpath: &[&str]) -> elf::Dynamic {
    elf::Dynamic {
        needed: needed.iter().map(|n| n.to_string()).collect(),
        runpath: runpath.iter().map(|d| d.to_string()).collect(),
        machine: object::elf::EM_X86_64,
        ..elf::Dynamic::default()
    }
}

const PSYCOPG: &str =
    "/venv/lib/python3.13/site-packages/psycopg2/_psycopg.cpython-313-x86_64-linux-gnu.so";
const MULTIARCH: &str = "/usr/lib/x86_64-linux-gnu";

/// A Debian root (`/lib` a link to `usr/lib`) with psycopg2 built from source against the
/// system's libpq, whose RUNPATH is `libpq_runpath`, and the tree's OpenSSL.
fn debian_root(libpq_runpath: &[&str]) -> MemRoot {
    let mut root = MemRoot::default();
    let files = [
        (
            PSYCOPG.to_string(),
            dynamic(&["libpq.so.5", "libc.so.6"], &[]),
        ),
        (
            format!("{MULTIARCH}/libpq.so.5.15"),
            dynamic(
                &["libssl.so.3", "libcrypto.so.3", "libc.so.6"],
                libpq_runpath,
            ),
        ),
        (
            format!("{MULTIARCH}/libssl.so.3.0.0"),
            dynamic(&["libcrypto.so.3"], &[]),
        ),
        (format!("{MULTIARCH}/libcrypto.so.3"), dynamic(&[], &[])),
        (format!("{MULTIARCH}/libc.so.6"), dynamic(&[], &[])),
        (
            "/opt/python-fips/lib/libssl.so.3".into(),
            dynamic(&["libcrypto.so.3"], &["$ORIGIN"]),
        ),
        (
            "/opt/python-fips/lib/libcrypto.so.3".into(),
            dynamic(&[], &[]),
        ),
    ];
    root.files.extend(files);
    let links = [
        ("/lib".to_string(), "usr/lib".to_string()),
        (format!("{MULTIARCH}/libpq.so.5"), "libpq.so.5.15".into()),
        (format!("{MULTIARCH}/libssl.so.3"), "libssl.so.3.0.0".into()),
    ];
    root.links.extend(links);
    let conf = [
        ("/etc/ld.so.conf", "include /etc/ld.so.conf.d/*.conf\n"),
        (
            "/etc/ld.so.conf.d/x86_64-linux-gnu.conf",
            "/usr/local/lib/x86_64-linux-gnu\n/lib/x86_64-linux-gnu\n/usr/lib/x86_64-linux-gnu\n",
        ),
    ];
    root.conf
        .extend(conf.map(|(p, t)| (p.to_string(), t.to_string())));
    root
}

/// The findings' texts for what `installed` loads through other libraries in `root`.
fn through(root: MemRoot, installed: &str) -> Vec<String> {
    let dynamic = root.files[installed].clone();
    loaded_through(&Loader::new(root), installed, &dynamic)
        .into_iter()
        .map(|(what, why)| {
            assert_eq!(why, WHY_THROUGH);
            what
        })
        .collect()
}

#[test]
fn a_system_libssl_loaded_through_another_library_is_found_with_its_chain() {
    let libpq = format!("libpq.so.5 ({MULTIARCH}/libpq.so.5)");
    assert_eq!(
        through(debian_root(&[]), PSYCOPG),
        [
            format!("loads {MULTIARCH}/libssl.so.3 through {libpq}"),
            format!("loads {MULTIARCH}/libcrypto.so.3 through {libpq}"),
        ]
    );

    // A libpq whose RUNPATH leads into the tree loads the tree's OpenSSL: clean.
    let into_tree = "$ORIGIN/../../../opt/python-fips/lib";
    assert_eq!(
        through(debian_root(&[into_tree]), PSYCOPG),
        Vec::<String>::new()
    );

    // A crypto library the loader finds nowhere is not called clean.
    let mut missing = debian_root(&[]);
    missing
        .files
        .remove(&format!("{MULTIARCH}/libssl.so.3.0.0"));
    let found = through(missing, PSYCOPG);
    assert_eq!(found.len(), 2, "{found:?}");
    assert_eq!(
        found[0],
        format!(
            "needs libssl.so.3 through {libpq}, which the loader finds in none of the \
             directories it searches"
        )
    );

    // The tree's own OpenSSL and a library of the tree's own are no findings.
    let root = debian_root(&[]);
    assert!(through(root, "/opt/python-fips/lib/libssl.so.3").is_empty());
}

/// Appends to `tar` a file `path` holding `data`, or a symlink to `target`.
fn tar_entry(tar: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8], target: Option<&str>) {
    let mut header = tar::Header::new_gnu();
    header.set_mode(0o755);
    match target {
        Some(target) => {
            header.set_entry_type(tar::EntryType::Symlink);
            header.set_size(0);
            tar.append_link(&mut header, path, target).unwrap();
        }
        None => {
            header.set_size(data.len() as u64);
            tar.append_data(&mut header, path, data).unwrap();
        }
    }
}

/// An image's walk records links, ld.so.conf and every ELF file, then judges what each audited
/// file loads, its findings kept beside its own.
#[test]
fn an_image_walk_follows_libraries_through_its_own_ld_so_conf() {
    let mut tar = tar::Builder::new(Vec::new());
    let venv = "venv/lib/python3.13/site-packages";
    let files: [(&str, Vec<u8>, Option<&str>); 9] = [
        ("./lib", vec![], Some("usr/lib")),
        (
            "./etc/ld.so.conf",
            b"include /etc/ld.so.conf.d/*.conf\n".to_vec(),
            None,
        ),
        (
            "./etc/ld.so.conf.d/pgdg.conf",
            b"/usr/pgsql-16/lib\n".to_vec(),
            None,
        ),
        (
            &format!("./{venv}/psycopg2/_psycopg.so"),
            tiny_elf(&["libpq.so.5"], None, None),
            None,
        ),
        (
            &format!("./{venv}/other/_x.so"),
            tiny_elf(&["libcrypto.so.3"], None, None),
            None,
        ),
        (
            "./usr/pgsql-16/lib/libpq.so.5.16",
            tiny_elf(&["libssl.so.3", "libc.so.6"], None, None),
            None,
        ),
        (
            "./usr/pgsql-16/lib/libpq.so.5",
            vec![],
            Some("libpq.so.5.16"),
        ),
        (
            "./usr/lib/x86_64-linux-gnu/libssl.so.3",
            tiny_elf(&["libcrypto.so.3"], None, None),
            None,
        ),
        (
            "./usr/lib/x86_64-linux-gnu/README",
            b"not ELF".to_vec(),
            None,
        ),
    ];
    for (path, data, target) in &files {
        tar_entry(&mut tar, path, data, *target);
    }
    let stream = tar.into_inner().unwrap();
    let mut scanner = Scanner::new("image", LIMITS);
    scanner.scan_tar(stream.as_slice()).unwrap();
    let report = scanner.report;
    assert_eq!(report.elf_files, 2);
    let found: Vec<(&str, &str)> = report
        .findings
        .iter()
        .map(|f| (f.file.as_str(), f.what.as_str()))
        .collect();
    assert_eq!(found.len(), 2, "{found:#?}");
    assert_eq!(
        found[0],
        (
            format!("/{venv}/psycopg2/_psycopg.so").as_str(),
            "loads /usr/lib/x86_64-linux-gnu/libssl.so.3 through libpq.so.5 \
             (/usr/pgsql-16/lib/libpq.so.5)"
        )
    );
    assert_eq!(found[1].0, format!("/{venv}/other/_x.so"));
    assert!(found[1].1.contains("NEEDED libcrypto.so.3 without RUNPATH"));
}

/// The case on this machine: an extension whose `$ORIGIN` RUNPATH finds `libmid.so`
/// beside it, which links the system's libssl, in a venv-like directory.
#[test]
fn a_venv_extension_loading_the_systems_libssl_through_a_library_is_found() {
    let out = Command::new("sh")
        .args([
            "-c",
            "ldconfig -p | awk '$1 == \"libssl.so.3\" { print $NF; exit }'",
        ])
        .output()
        .expect("sh and ldconfig run");
    let system_ssl = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        !system_ssl.is_empty(),
        "this test needs the system's libssl.so.3 (Debian: apt-get install libssl3 libssl-dev)"
    );
    let venv = TempDir::new("audit-venv-chain");
    let pkg = venv.path().join("lib/python3.13/site-packages/pkg");
    std::fs::create_dir_all(&pkg).unwrap();
    let mid_source = "extern void *SSL_CTX_new(const void *);\n\
                      void *mid(void) { return SSL_CTX_new(0); }\n";
    shared(
        &pkg,
        "libmid.so",
        mid_source,
        &[
            "-Wl,-soname,libmid.so",
            "-Wl,--no-as-needed",
            "-l:libssl.so.3",
        ],
    );
    let libs = format!("-L{}", pkg.display());
    let ext_args = [
        libs.as_str(),
        "-Wl,--no-as-needed",
        "-lmid",
        "-Wl,--enable-new-dtags,-rpath,$ORIGIN",
    ];
    let ext_source = "extern void *mid(void);\nvoid *PyInit__ext(void) { return mid(); }\n";
    shared(&pkg, "_ext.so", ext_source, &ext_args);

    let report = audit_path(venv.path()).unwrap();
    let ext = pkg.join("_ext.so").display().to_string();
    let mid = pkg.join("libmid.so").display().to_string();
    let through: Vec<&Finding> = report.findings.iter().filter(|f| f.file == ext).collect();
    assert_eq!(through.len(), 1, "{:#?}", report.findings);
    let what = &through[0].what;
    let loaded = what
        .strip_prefix("loads ")
        .and_then(|w| w.strip_suffix(&format!(" through libmid.so ({mid})")))
        .unwrap_or_else(|| panic!("{what}"));
    assert!(loaded.ends_with("/libssl.so.3"), "{what}");
    let real = |p: &str| std::fs::canonicalize(p).unwrap();
    assert_eq!(real(loaded), real(&system_ssl), "{what}");
    assert_eq!(through[0].package, "pkg");
    // libmid.so itself needs libssl without RUNPATH: the direct finding, as before.
    let direct: Vec<&str> = report
        .findings
        .iter()
        .filter(|f| f.file == mid)
        .map(|f| f.what.as_str())
        .collect();
    assert_eq!(
        direct,
        ["NEEDED libssl.so.3 without RUNPATH: resolved by the system's search path"]
    );
    assert!(report.ensure_clean().is_err());
}

/// A tree audited where it was unpacked installs to `/opt/python-fips`: a library that finds
/// libssl through `$ORIGIN` in the tree's lib directory finds the tree's own, there.
#[test]
fn a_tree_audited_where_it_lies_resolves_its_own_lib_directory() {
    let tree = TempDir::new("audit-tree-chain");
    let t = tree.path();
    let site = t.join("lib/python3.13/site-packages/pkg");
    std::fs::create_dir_all(&site).unwrap();
    std::fs::create_dir_all(t.join("bin")).unwrap();
    std::fs::write(t.join("bin/python-fips-setup"), "#!/bin/sh\n").unwrap();
    let ext = tiny_elf(&["libmid.so"], Some("$ORIGIN/../../.."), None);
    std::fs::write(site.join("_ext.so"), ext).unwrap();
    std::fs::write(t.join("lib/libssl.so.3.5"), tiny_elf(&[], None, None)).unwrap();
    std::os::unix::fs::symlink("libssl.so.3.5", t.join("lib/libssl.so.3")).unwrap();
    let mid = |runpath| tiny_elf(&["libssl.so.3"], runpath, None);
    std::fs::write(t.join("lib/libmid.so"), mid(Some("$ORIGIN"))).unwrap();
    let report = audit_path(t).unwrap();
    assert_eq!(report.elf_files, 3);
    assert!(report.findings.is_empty(), "{:#?}", report.findings);

    // Without its RUNPATH, libmid.so finds the system's libssl, if this machine has one.
    std::fs::write(t.join("lib/libmid.so"), mid(None)).unwrap();
    let report = audit_path(t).unwrap();
    let found: Vec<(&str, &str)> = report
        .findings
        .iter()
        .map(|f| (f.file.as_str(), f.what.as_str()))
        .collect();
    assert_eq!(found.len(), 2, "{found:#?}");
    assert!(found[0].0.ends_with("/lib/libmid.so"), "{found:#?}");
    assert!(found[0].1.contains("NEEDED libssl.so.3 without RUNPATH"));
    assert!(found[1].0.ends_with("/pkg/_ext.so"), "{found:#?}");
    assert!(
        found[1].1.starts_with("loads /")
            && found[1]
                .1
                .ends_with("/libssl.so.3 through libmid.so (/opt/python-fips/lib/libmid.so)"),
        "{found:#?}"
    );
}
