//! Privileged tests of the native symbolizer against live node processes:
//! addresses of known symbols (from the ELF file and the process's mappings)
//! come back with their names, on every Node build scripts/fetch-node.sh
//! provides; a stripped node gives file offsets with the right build-id; V8's
//! JIT code is anonymous. Run as root; they never skip.

mod support;

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc::channel,
    thread,
    time::Instant,
};

use heaptrace::{
    core::sites::FrameKind,
    symbols::native::{NativeError, NativeName, NativeSymbolizer},
};
use object::{Object, ObjectSegment, ObjectSymbol};
use support::*;

/// Hot JS, so that V8 has compiled code in anonymous memory, then idle work
/// until killed. The file name is this test's own.
const SCRIPT: &str = r#"
function nativeSymbolsHotLoop(n) { let s = 0; for (let i = 0; i < n; i++) s += i * 2; return s; }
let total = 0;
for (let i = 0; i < 3000; i++) total += nativeSymbolsHotLoop(10000);
console.log("ready " + total);
setInterval(() => { for (let i = 0; i < 50; i++) nativeSymbolsHotLoop(10000); }, 20);
"#;

const COLLECT_GARBAGE: &str = "v8::internal::Heap::CollectGarbage";
const COLLECT_GARBAGE_MANGLED: &str = "_ZN2v88internal4Heap14CollectGarbageE";
const ARRAY_CONSTRUCTOR: &str = "Builtins_ArrayConstructor";

/// A node process running [`SCRIPT`], killed on drop (panics included).
struct Node {
    child: Child,
}

impl Node {
    /// `node` (official) or Debian's node when `debian_root` is given; waits
    /// until the script has warmed up.
    fn start(node: &Path, debian_root: Option<&Path>) -> Self {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        let script = dir.join(format!("native-symbols-{}.js", std::process::id()));
        std::fs::write(&script, SCRIPT).unwrap();
        let mut cmd = match debian_root {
            Some(root) => debian_node_command(root, node),
            None => Command::new(node),
        };
        let mut child = cmd
            .arg(&script)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {}: {e}", node.display()));
        let (tx, rx) = channel();
        let out = child.stdout.take().unwrap();
        thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let me = Node { child };
        let line = rx.recv_timeout(WAIT).unwrap_or_else(|e| panic!("{} did not start: {e}", node.display()));
        assert!(line.starts_with("ready"), "unexpected output {line:?}");
        me
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One line of /proc/PID/maps: (start, end, perms, offset, path).
type Mapping = (u64, u64, String, u64, String);

fn maps(pid: u32) -> Vec<Mapping> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    text.lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (s, e) = f[0].split_once('-').unwrap();
            let hex = |x: &str| u64::from_str_radix(x, 16).unwrap();
            (hex(s), hex(e), f[1].to_owned(), hex(f[2]), f.get(5).map(|p| p.to_string()).unwrap_or_default())
        })
        .collect()
}

/// The file offset of the function symbol whose (mangled) name is `name`,
/// or starts with it when `prefix`; from `.symtab` or `.dynsym`.
fn symbol_offset(elf: &Path, name: &str, prefix: bool) -> Option<u64> {
    let data = std::fs::read(elf).unwrap();
    let file = object::File::parse(&*data).unwrap();
    let sym = file.symbols().chain(file.dynamic_symbols()).find(|s| {
        s.kind() == object::SymbolKind::Text
            && s.address() != 0
            && s.name().is_ok_and(|n| if prefix { n.starts_with(name) } else { n == name })
    })?;
    let vaddr = sym.address();
    file.segments().find_map(|seg| {
        let (offset, size) = seg.file_range();
        (vaddr >= seg.address() && vaddr < seg.address() + size).then(|| vaddr - seg.address() + offset)
    })
}

/// Every address at which process `pid` has the file offset `offset` of
/// `file` (a path as /proc/PID/maps shows it) in executable memory. Node
/// maps its embedded builtins a second time (official builds from 20 on).
fn addresses_of(pid: u32, file: &str, offset: u64) -> Vec<u64> {
    maps(pid)
        .into_iter()
        .filter(|(s, e, perms, off, path)| {
            path == file && perms.contains('x') && offset >= *off && offset < off + (e - s)
        })
        .map(|(s, _, _, off, _)| s + offset - off)
        .collect()
}

fn gnu_build_id(elf: &Path) -> String {
    let data = std::fs::read(elf).unwrap();
    let id = object::File::parse(&*data).unwrap().build_id().unwrap().expect("a build-id");
    id.iter().map(|b| format!("{b:02x}")).collect()
}

/// What `readelf -n` says the build-id is: a second, independent reading.
fn readelf_build_id(elf: &Path) -> String {
    let out = Command::new("readelf").arg("-n").arg(elf).output().expect("readelf (binutils)");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines().find_map(|l| l.trim().strip_prefix("Build ID: ")).expect("a Build ID line").to_owned()
}

/// Names `addr` and `addr + 1` (a return address just after a call) and
/// checks both, and the frame they make.
fn assert_named(s: &mut NativeSymbolizer, pid: u32, addr: u64, function: &str, file: &str) {
    let names = s.symbolize(pid, &[addr, addr + 1]).unwrap();
    let builtin = function.starts_with("Builtins_");
    for name in &names {
        assert_eq!(
            name,
            &NativeName::Named { function: function.into(), file: file.into(), builtin },
            "at {addr:#x} in {file}"
        );
    }
    // As the second frame of a stack, addr + 1 is a return address: the
    // byte before it is looked up.
    let stack = s.symbolize_stack(pid, &[addr, addr + 1]).unwrap();
    assert_eq!(stack, names);
    let frame = names[0].to_frame();
    assert_eq!(frame.kind, if builtin { FrameKind::Builtin } else { FrameKind::Native });
    assert_eq!((frame.function.as_str(), frame.file.as_deref()), (function, Some(file)));
}

/// The first executable anonymous mapping: V8's JIT code.
fn jit_address(pid: u32) -> u64 {
    let found = maps(pid).into_iter().find(|(_, _, perms, _, path)| perms.contains('x') && path.is_empty());
    found.unwrap_or_else(|| panic!("no anonymous executable mapping in {}", maps_text(pid))).0
}

fn maps_text(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default()
}

/// The whole check for one build: `v8_file` is the ELF file with V8 in it
/// (node, or Debian's libnode.so), as the process maps it.
fn check(node: &Path, debian_root: Option<&Path>, v8_file: &Path) {
    require_root();
    let proc = Node::start(node, debian_root);
    let pid = proc.pid();
    let file = v8_file.to_str().unwrap();
    let mut s = NativeSymbolizer::new();

    let offset = symbol_offset(v8_file, COLLECT_GARBAGE_MANGLED, true).expect("Heap::CollectGarbage");
    let addrs = addresses_of(pid, file, offset);
    assert_eq!(addrs.len(), 1, "{file} at {offset:#x} in {}", maps_text(pid));
    let t = Instant::now();
    assert_named(&mut s, pid, addrs[0], COLLECT_GARBAGE, file);
    let cold = t.elapsed();
    let t = Instant::now();
    assert_named(&mut s, pid, addrs[0], COLLECT_GARBAGE, file);
    eprintln!("{}: first lookup (parsing {file}) {cold:.2?}, again {:.2?}", node.display(), t.elapsed());

    // Builtins are in .symtab only, which Debian's libnode does not have.
    if debian_root.is_none() {
        let offset = symbol_offset(v8_file, ARRAY_CONSTRUCTOR, false).expect(ARRAY_CONSTRUCTOR);
        let addrs = addresses_of(pid, file, offset);
        assert!(!addrs.is_empty(), "{ARRAY_CONSTRUCTOR} not mapped: {}", maps_text(pid));
        for addr in addrs {
            assert_named(&mut s, pid, addr, ARRAY_CONSTRUCTOR, file);
        }
    }

    let jit = jit_address(pid);
    let names = s.symbolize(pid, &[jit, 0x10, u64::MAX, 0xffff_ffff_8100_0000]).unwrap();
    assert_eq!(
        names,
        vec![
            NativeName::Anonymous { executable: true },
            NativeName::Unmapped,
            NativeName::Unmapped,
            NativeName::Unmapped
        ]
    );

    drop(proc);
    assert!(wait_until(WAIT, || !Path::new(&format!("/proc/{pid}")).exists()), "node {pid} did not go");
    assert!(matches!(s.symbolize(pid, &[jit]), Err(NativeError::Maps { .. })));
    s.forget(pid);
}

fn official(version: &str) {
    let node = node_bin(version);
    check(&node, None, &node);
}

#[test]
fn names_v8_and_builtins_in_node_18() {
    official("18.20.8");
}

#[test]
fn names_v8_and_builtins_in_node_20() {
    official("20.20.2");
}

#[test]
fn names_v8_and_builtins_in_node_22() {
    official("22.23.3");
}

#[test]
fn names_v8_and_builtins_in_node_24() {
    official("24.21.0");
}

#[test]
fn names_v8_and_builtins_in_node_26() {
    official("26.10.0");
}

#[test]
fn names_v8_in_debian_node_18_libnode() {
    let root = node_cache().join("debian-18");
    let node = root.join("usr/bin/node");
    assert!(node.exists(), "{} is missing: run scripts/fetch-node.sh", node.display());
    check(&node, Some(&root), &root.join("usr/lib/x86_64-linux-gnu/libnode.so.108"));
}

/// A stripped copy of a file, removed on drop.
struct TempCopy(PathBuf);

impl Drop for TempCopy {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn a_stripped_node_gives_file_offsets_and_its_build_id() {
    require_root();
    let original = node_bin("22.23.3");
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("native-symbols");
    std::fs::create_dir_all(&dir).unwrap();
    let stripped = TempCopy(dir.join(format!("node22-stripped-{}", std::process::id())));
    std::fs::copy(&original, &stripped.0).unwrap();
    let status = Command::new("strip").arg(&stripped.0).status().expect("strip (binutils)");
    assert!(status.success(), "strip failed");
    let build_id = gnu_build_id(&original);
    assert_eq!(build_id, readelf_build_id(&original));
    assert_eq!(gnu_build_id(&stripped.0), build_id, "strip keeps the build-id");

    let proc = Node::start(&stripped.0, None);
    let pid = proc.pid();
    let file = stripped.0.to_str().unwrap();
    let mut s = NativeSymbolizer::new();

    // Builtins were only in .symtab: now a bare offset with the build-id.
    let offset = symbol_offset(&original, ARRAY_CONSTRUCTOR, false).unwrap();
    let addrs = addresses_of(pid, file, offset);
    assert!(!addrs.is_empty(), "{}", maps_text(pid));
    for addr in addrs {
        let names = s.symbolize(pid, &[addr, addr + 1]).unwrap();
        for (name, off) in names.iter().zip([offset, offset + 1]) {
            assert_eq!(
                name,
                &NativeName::InFile { file: file.into(), offset: off, build_id: Some(build_id.clone()) }
            );
        }
        let frame = names[0].to_frame();
        assert_eq!(frame.function, format!("{offset:#x}"));
        assert_eq!(frame.build_id.as_deref(), Some(build_id.as_str()));
    }
    // Node 22 exports V8's functions in .dynsym, which strip keeps.
    let offset = symbol_offset(&original, COLLECT_GARBAGE_MANGLED, true).unwrap();
    let addr = addresses_of(pid, file, offset)[0];
    assert_named(&mut s, pid, addr, COLLECT_GARBAGE, file);

    // Every mapping's first and last byte, and just past it: whatever they
    // are, naming them does not fail or panic.
    let edges: Vec<u64> = maps(pid).iter().flat_map(|(st, e, ..)| [*st, e - 1, *e]).collect();
    let names = s.symbolize(pid, &edges).unwrap();
    assert_eq!(names.len(), edges.len());
    s.forget(pid);
}
