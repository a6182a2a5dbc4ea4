//! ELF dynamic linking facts (`NEEDED`, `SONAME`, `RUNPATH`), read as the loader reads them.
//!
//! The runtime image installs the libraries the tree links and nothing else, so what it needs is
//! read from the tree itself rather than from a hand-written list.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use object::elf;
use object::read::elf::{FileHeader, ProgramHeader};
use object::{Endian, Endianness, FileKind};

use crate::tarwalk::{self, Compression};

/// What one ELF file asks of the dynamic linker, and the name it answers to.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Dynamic {
    /// `DT_NEEDED` sonames, in file order.
    pub needed: Vec<String>,
    /// `DT_SONAME`, for shared libraries that set one.
    pub soname: Option<String>,
    /// The directories of `DT_RUNPATH`, else of `DT_RPATH` (the loader ignores RPATH when
    /// RUNPATH is present), in search order, `$ORIGIN` unexpanded.
    pub runpath: Vec<String>,
    /// Whether `runpath` came from `DT_RPATH`, which the loader also searches for the libraries
    /// of the libraries this file loads, where `DT_RUNPATH` serves only this file's own.
    pub rpath: bool,
    /// `e_machine`: the loader takes a library only of its own machine.
    pub machine: u16,
}

/// Reads the dynamic section of `data`: `Ok(None)` for a file that is not ELF, or an ELF file
/// without one (a static program, an object file); an error for a damaged ELF file.
pub fn parse(data: &[u8]) -> Result<Option<Dynamic>> {
    match FileKind::parse(data) {
        Ok(FileKind::Elf64) => dynamic::<elf::FileHeader64<Endianness>>(data),
        Ok(FileKind::Elf32) => dynamic::<elf::FileHeader32<Endianness>>(data),
        _ if data.starts_with(b"\x7fELF") => Err(anyhow!("not a valid ELF file")),
        _ => Ok(None),
    }
}

/// The dynamic array and its strings as the loader finds them: at the address of the
/// `PT_DYNAMIC` program header, in memory as the `PT_LOAD` segments map the file, never through
/// section headers, which the loader ignores (a file may lack them or have them name another
/// array).
fn dynamic<H: FileHeader<Endian = Endianness>>(data: &[u8]) -> Result<Option<Dynamic>> {
    let damaged = |e: object::read::Error| anyhow!("damaged ELF file: {e}");
    let header = H::parse(data).map_err(damaged)?;
    let endian = header.endian().map_err(damaged)?;
    let segments = header.program_headers(endian, data).map_err(damaged)?;
    // Like the loader, skip a PT_DYNAMIC without file data: `objcopy --only-keep-debug` files.
    let mut arrays = segments
        .iter()
        .filter(|p| p.p_type(endian) == elf::PT_DYNAMIC && p.p_filesz(endian).into() > 0);
    let Some(array) = arrays.next() else {
        return Ok(None);
    };
    if arrays.next().is_some() {
        bail!("damaged ELF file: it has more than one PT_DYNAMIC segment");
    }
    let memory = Memory::of::<H>(segments, endian, data)?;
    let width = if header.is_type_64() { 8 } else { 4 };
    let mut entries = Vec::new();
    let mut at: u64 = array.p_vaddr(endian).into();
    loop {
        let tag = memory.word(at, width)?;
        if tag == u64::from(elf::DT_NULL) {
            break;
        }
        entries.push((tag, memory.word(at.wrapping_add(width), width)?));
        at = at.wrapping_add(2 * width);
    }
    let mut out = strings(&memory, &entries)?;
    out.machine = header.e_machine(endian);
    Ok(Some(out))
}

/// `NEEDED`, `SONAME` and `RUNPATH` (else `RPATH`) of the dynamic array `entries` (tag, value).
fn strings(memory: &Memory, entries: &[(u64, u64)]) -> Result<Dynamic> {
    let tag_of = |t: u32| u64::from(t);
    let strtab = entries.iter().find(|e| e.0 == tag_of(elf::DT_STRTAB));
    let mut out = Dynamic::default();
    let (mut rpath, mut runpath) = (None, None);
    for &(tag, value) in entries {
        let named = [
            elf::DT_NEEDED,
            elf::DT_SONAME,
            elf::DT_RPATH,
            elf::DT_RUNPATH,
        ];
        if !named.iter().any(|&t| tag == tag_of(t)) {
            continue;
        }
        let Some(&(_, strtab)) = strtab else {
            bail!("damaged ELF file: its dynamic array names libraries but has no DT_STRTAB");
        };
        let name = memory.string(strtab.wrapping_add(value))?;
        match u32::try_from(tag) {
            Ok(elf::DT_NEEDED) => out.needed.push(name),
            Ok(elf::DT_SONAME) => out.soname = Some(name),
            Ok(elf::DT_RPATH) => rpath = Some(name),
            _ => runpath = Some(name),
        }
    }
    out.rpath = runpath.is_none() && rpath.is_some();
    if let Some(dirs) = runpath.or(rpath) {
        out.runpath = dirs
            .split(':')
            .filter(|d| !d.is_empty())
            .map(String::from)
            .collect();
    }
    Ok(out)
}

/// The longest string of a dynamic array read (a `RUNPATH` of many directories fits).
const MAX_STRING: usize = 64 * 1024;

/// A file as its `PT_LOAD` segments map it: each segment's file bytes at its address, then
/// zeros up to its size in memory.
struct Memory<'a> {
    /// (address, size in memory, bytes in the file)
    loads: Vec<(u64, u64, &'a [u8])>,
    little: bool,
}

impl<'a> Memory<'a> {
    fn of<H: FileHeader<Endian = Endianness>>(
        segments: &'a [H::ProgramHeader],
        endian: Endianness,
        data: &'a [u8],
    ) -> Result<Memory<'a>> {
        let mut loads = Vec::new();
        for p in segments.iter().filter(|p| p.p_type(endian) == elf::PT_LOAD) {
            let bytes = p.data(endian, data).map_err(|()| {
                anyhow!("damaged ELF file: a PT_LOAD segment lies beyond its end (truncated?)")
            })?;
            loads.push((p.p_vaddr(endian).into(), p.p_memsz(endian).into(), bytes));
        }
        let little = endian.is_little_endian();
        Ok(Memory { loads, little })
    }

    fn byte(&self, address: u64) -> Result<u8> {
        for &(start, size, bytes) in &self.loads {
            if let Some(offset) = address.checked_sub(start)
                && offset < size
            {
                return Ok(usize::try_from(offset)
                    .ok()
                    .and_then(|o| bytes.get(o).copied())
                    .unwrap_or(0));
            }
        }
        bail!(
            "damaged ELF file: its dynamic array reaches address {address:#x}, which no PT_LOAD segment maps"
        )
    }

    /// The unsigned integer of `width` bytes at `address`.
    fn word(&self, address: u64, width: u64) -> Result<u64> {
        let mut value = 0u64;
        for i in 0..width {
            let b = u64::from(self.byte(address.wrapping_add(i))?);
            value |= match self.little {
                true => b << (8 * i),
                false => b << (8 * (width - 1 - i)),
            };
        }
        Ok(value)
    }

    /// The NUL-terminated string at `address`.
    fn string(&self, address: u64) -> Result<String> {
        let mut bytes = Vec::new();
        loop {
            match self.byte(address.wrapping_add(bytes.len() as u64))? {
                0 => return Ok(String::from_utf8_lossy(&bytes).into_owned()),
                _ if bytes.len() == MAX_STRING => {
                    bail!(
                        "damaged ELF file: a string of its dynamic array has no end within {MAX_STRING} bytes"
                    )
                }
                b => bytes.push(b),
            }
        }
    }
}

/// The libraries a tree needs from the system: every `NEEDED` soname of its ELF files that no
/// file of the tree provides (by `SONAME` or by file name), with the first file that needs it.
pub fn external_needs(tarball: &Path) -> Result<BTreeMap<String, String>> {
    let mut needed: BTreeMap<String, String> = BTreeMap::new();
    let mut provided = BTreeSet::new();
    tarwalk::for_each_entry(tarball, Compression::Gzip, |path, entry| {
        if let Some(name) = Path::new(path).file_name() {
            provided.insert(name.to_string_lossy().into_owned());
        }
        if !entry.header().entry_type().is_file() {
            return Ok(None::<()>);
        }
        let mut data = Vec::new();
        entry.read_to_end(&mut data)?;
        let Some(dynamic) = parse(&data).with_context(|| format!("cannot read {path}"))? else {
            return Ok(None);
        };
        provided.extend(dynamic.soname);
        for soname in dynamic.needed {
            needed.entry(soname).or_insert_with(|| path.to_string());
        }
        Ok(None)
    })?;
    needed.retain(|soname, _| !provided.contains(soname));
    Ok(needed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;

    /// A program of this machine, found the way the shell would find it.
    fn system_program(name: &str) -> Vec<u8> {
        for dir in ["/usr/bin", "/bin"] {
            if let Ok(data) = std::fs::read(Path::new(dir).join(name)) {
                return data;
            }
        }
        panic!("{name} is not in /usr/bin or /bin");
    }

    /// `readelf --dynamic` is the reference reading of the same file.
    fn readelf_needed(path: &str) -> Vec<String> {
        let out = std::process::Command::new("readelf")
            .args(["--dynamic", "--wide", path])
            .output()
            .expect("readelf (binutils) is installed");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains("(NEEDED)"))
            .filter_map(|l| Some(l.split_once('[')?.1.trim_end_matches(']').to_string()))
            .collect()
    }

    #[test]
    fn reads_needed_of_a_real_program_as_readelf_does() {
        let ls = system_program("ls");
        let dynamic = parse(&ls).unwrap().expect("ls is dynamically linked");
        assert!(
            dynamic.needed.iter().any(|n| n == "libc.so.6"),
            "{dynamic:?}"
        );
        assert_eq!(dynamic.soname, None, "a program has no SONAME");
        let path = if Path::new("/usr/bin/ls").exists() {
            "/usr/bin/ls"
        } else {
            "/bin/ls"
        };
        assert_eq!(dynamic.needed, readelf_needed(path));
    }

    #[test]
    fn reads_the_soname_of_a_real_library() {
        let out = std::process::Command::new("sh")
            .args([
                "-c",
                "ldconfig -p | awk '$1 == \"libc.so.6\" { print $NF; exit }'",
            ])
            .output()
            .unwrap();
        let libc = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let data = std::fs::read(&libc).unwrap_or_else(|e| panic!("cannot read {libc:?}: {e}"));
        let dynamic = parse(&data).unwrap().unwrap();
        assert_eq!(dynamic.soname.as_deref(), Some("libc.so.6"));
    }

    /// The loader reads a file's program headers only: with its section headers zeroed, `ls`
    /// still runs and still needs what it needed.
    #[test]
    fn reads_needed_from_the_program_headers_as_the_loader_does() {
        let mut ls = system_program("ls");
        let path = if Path::new("/usr/bin/ls").exists() {
            "/usr/bin/ls"
        } else {
            "/bin/ls"
        };
        ls[40..48].fill(0); // e_shoff
        ls[60..64].fill(0); // e_shnum, e_shstrndx
        let dynamic = parse(&ls).unwrap().expect("ls is still dynamically linked");
        assert_eq!(dynamic.needed, readelf_needed(path));
    }

    #[test]
    fn text_is_not_elf_and_a_cut_elf_is_an_error() {
        assert_eq!(parse(b"#!/bin/sh\necho hi\n").unwrap(), None);
        assert_eq!(parse(b"").unwrap(), None);
        let ls = system_program("ls");
        assert!(
            parse(&ls[..100]).is_err(),
            "a truncated ELF file must not parse"
        );
    }

    #[test]
    fn external_needs_leaves_out_what_the_tree_provides() {
        let dir = TempDir::new("elf");
        let tarball = dir.path().join("tree.tar.gz");
        let ls = system_program("ls");
        let provided = parse(&ls).unwrap().unwrap().needed;
        // The tree "provides" every library of ls but libc by a symlink of that name.
        let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(
            std::fs::File::create(&tarball).unwrap(),
            flate2::Compression::fast(),
        ));
        let mut h = tar::Header::new_gnu();
        h.set_size(ls.len() as u64);
        h.set_mode(0o755);
        tar.append_data(&mut h, "opt/python-fips/bin/ls", ls.as_slice())
            .unwrap();
        let script = b"#!/bin/sh\n";
        let mut h = tar::Header::new_gnu();
        h.set_size(script.len() as u64);
        h.set_mode(0o755);
        tar.append_data(&mut h, "opt/python-fips/bin/tool", &script[..])
            .unwrap();
        for soname in provided.iter().filter(|n| *n != "libc.so.6") {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            tar.append_link(&mut h, format!("opt/python-fips/lib/{soname}"), "x")
                .unwrap();
        }
        tar.into_inner().unwrap().finish().unwrap();

        let needs = external_needs(&tarball).unwrap();
        assert_eq!(
            needs.into_iter().collect::<Vec<_>>(),
            vec![(
                "libc.so.6".to_string(),
                "opt/python-fips/bin/ls".to_string()
            )]
        );
    }
}
