//! Flame graphs of allocation sites: folded stacks (`root;caller;callee
//! value`), drawn as an interactive SVG by inferno.
//!
//! Each process is one root frame (`node (pid 4242)`); above it the frames
//! go outermost to innermost, so the widest tops are where memory comes
//! from. Colours tell the kind of code apart: JS green, V8 builtins aqua,
//! native red, kernel orange (FlameGraph's own conventions where it has
//! them: green for JIT code, orange for the kernel).

use std::collections::BTreeMap;

use inferno::flamegraph::{
    self, Options, Palette,
    color::{Color, MultiPalette, PaletteMap},
};

use super::sites_export::{ExportError, ProcessSites, frames_or_unknown};
use crate::core::sites::{AllocationSite, Frame, FrameKind};

/// What a stack's width stands for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Weight {
    /// Bytes allocated since tracing began: where the churn is.
    #[default]
    Allocated,
    /// Bytes still mapped or committed: where the growth is.
    Live,
}

impl Weight {
    fn of(self, site: &AllocationSite) -> u64 {
        match self {
            Weight::Allocated => site.bytes,
            Weight::Live => site.live_bytes,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Weight::Allocated => "allocated bytes",
            Weight::Live => "live bytes",
        }
    }
}

/// The folded stacks, one line per distinct stack (identical stacks summed),
/// sorted: `node (pid 4242);[JS];handler (app.js:17)_[j];malloc 1048576`.
///
/// JS frames carry FlameGraph's `_[j]` suffix and kernel frames `_[k]`, which
/// inferno and flamegraph.pl strip when drawing; so these lines, saved and
/// drawn with `--colors js`, still tell JS and kernel frames apart. Stacks
/// that weigh nothing are left out.
pub fn folded_lines(processes: &[ProcessSites<'_>], weight: Weight) -> Vec<String> {
    fold(processes, weight).0.into_iter().map(|(stack, value)| format!("{stack} {value}")).collect()
}

/// The flame graph as a standalone SVG (it embeds its own script for zoom
/// and search). Byte-for-byte the same for the same sites, in any order.
pub fn render_svg(processes: &[ProcessSites<'_>], weight: Weight) -> Result<Vec<u8>, ExportError> {
    let (stacks, mut palette) = fold(processes, weight);
    if stacks.is_empty() {
        return Err(ExportError::NothingToDraw { what: weight.describe() });
    }
    let lines: Vec<String> = stacks.into_iter().map(|(stack, value)| format!("{stack} {value}")).collect();

    let mut opt = Options::default();
    opt.title = format!("heaptrace: {} by stack", weight.describe());
    opt.subtitle = Some("JS green, V8 builtins aqua, native red, kernel orange".into());
    opt.count_name = "bytes".into();
    // Every frame has its colour in `palette`; the palette and determinism
    // only matter should one be missing, and then it must not be random.
    opt.colors = Palette::Multi(MultiPalette::Js);
    opt.deterministic = true;
    opt.palette_map = Some(&mut palette);

    let mut svg = Vec::new();
    flamegraph::from_lines(&mut opt, lines.iter().map(String::as_str), &mut svg)
        .map_err(ExportError::Render)?;
    Ok(svg)
}

/// Folded stacks with their summed weight, and each frame name's colour.
fn fold(processes: &[ProcessSites<'_>], weight: Weight) -> (BTreeMap<String, u64>, PaletteMap) {
    let mut stacks: BTreeMap<String, u64> = BTreeMap::new();
    let mut palette = PaletteMap::default();
    // inferno's own root frame ("all") is named "" inside; grey like the
    // process roots, not the red the palette would give it.
    palette.insert("", colour("", None));
    for process in processes {
        let root = sanitize(&format!("{} (pid {})", process.name, process.pid));
        palette.insert(&root, colour(&root, None));
        for site in process.sites {
            let value = weight.of(site);
            if value == 0 {
                continue;
            }
            let mut stack = root.clone();
            for frame in frames_or_unknown(site).iter().rev() {
                let name = frame_name(frame);
                stack.push(';');
                stack.push_str(&name);
                palette.insert(&name, colour(&name, Some(frame.kind)));
            }
            let total = stacks.entry(stack).or_default();
            *total = total.saturating_add(value);
        }
    }
    (stacks, palette)
}

/// A frame's name in a folded stack: its label, made safe, with the kind
/// suffix FlameGraph's palettes read.
fn frame_name(frame: &Frame) -> String {
    let mut name = sanitize(&frame.label());
    match frame.kind {
        FrameKind::Js => name.push_str("_[j]"),
        FrameKind::Kernel => name.push_str("_[k]"),
        FrameKind::Native | FrameKind::Builtin => {}
    }
    name
}

/// Makes a label safe for a folded line, where `;` separates frames, the
/// last space-separated field is the count, and a line is one stack.
fn sanitize(label: &str) -> String {
    let cleaned: String = label
        .chars()
        .map(|c| {
            if c == ';' {
                ':'
            } else if c.is_control() {
                ' '
            } else {
                c
            }
        })
        .collect();
    let mut name = cleaned.trim().to_string();
    if name.is_empty() {
        return "[unknown]".into();
    }
    // inferno reads a stack ending in ` <number>` as a second count column
    // (a differential graph), and skips a line starting `# ` as a comment.
    // A no-break space looks the same and is neither.
    if let Some(space) = name.rfind(' ') {
        let tail = &name[space + 1..];
        if !tail.is_empty() && tail.chars().all(|c| c.is_ascii_digit() || c == '.') {
            name.replace_range(space..space + 1, "\u{a0}");
        }
    }
    if name.starts_with("# ") {
        name.replace_range(1..2, "\u{a0}");
    }
    name
}

/// A frame's colour: the hue says its kind (`None` for the process's root
/// frame), and the shade, varied by a hash of the name, tells neighbours
/// apart. The hash is FNV-1a, stable across runs and machines.
fn colour(name: &str, kind: Option<FrameKind>) -> Color {
    let hash =
        name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    let v = (hash >> 56) as f32 / 255.0;
    let shade = |base: u8, range: f32| base.saturating_add((range * v) as u8);
    let (r, g, b) = match kind {
        Some(FrameKind::Js) => (shade(50, 60.0), shade(200, 55.0), shade(50, 60.0)),
        Some(FrameKind::Builtin) => (shade(50, 60.0), shade(165, 55.0), shade(165, 55.0)),
        Some(FrameKind::Native) => (shade(200, 55.0), shade(50, 80.0), shade(50, 80.0)),
        Some(FrameKind::Kernel) => (shade(190, 65.0), shade(90, 65.0), 0),
        None => (shade(190, 30.0), shade(190, 30.0), shade(200, 30.0)),
    };
    Color { r, g, b }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(function: &str, kind: FrameKind, file: Option<&str>, line: Option<u32>) -> Frame {
        Frame { function: function.into(), file: file.map(Into::into), line, kind, build_id: None }
    }

    fn site(bytes: u64, live_bytes: u64, frames: Vec<Frame>) -> AllocationSite {
        AllocationSite { bytes, live_bytes, live_v8_bytes: 0, count: 1, frames }
    }

    /// A JS handler growing an array (through a builtin and V8 into mmap),
    /// the same stack again, a native frame with `;` in its name over a
    /// kernel frame, a stackless site, and one that allocated nothing.
    fn node_sites() -> Vec<AllocationSite> {
        let grow = vec![
            frame("mmap", FrameKind::Native, Some("/usr/lib/x86_64-linux-gnu/libc.so.6"), None),
            frame("v8::internal::Heap::AllocateRaw", FrameKind::Native, Some("/usr/bin/node"), None),
            frame("Builtins_ArrayConstructor", FrameKind::Builtin, Some("/usr/bin/node"), None),
            frame("handler", FrameKind::Js, Some("/srv/app/app.js"), Some(17)),
            Frame::unnamed_js(),
        ];
        vec![
            site(3 << 20, 1 << 20, grow.clone()),
            site(1 << 20, 0, grow),
            site(
                4096,
                4096,
                vec![
                    frame("do_brk_flags", FrameKind::Kernel, None, None),
                    frame("odd;name", FrameKind::Native, None, None),
                ],
            ),
            site(512, 512, vec![]),
            site(0, 0, vec![frame("never", FrameKind::Native, None, None)]),
        ]
    }

    fn worker_sites() -> Vec<AllocationSite> {
        vec![site(100, 100, vec![frame("work", FrameKind::Js, Some("/srv/w.js"), Some(3))])]
    }

    #[test]
    fn folded_lines_by_allocated_bytes() {
        let (node, worker) = (node_sites(), worker_sites());
        let processes = [
            ProcessSites { pid: 4242, name: "node", sites: &node },
            ProcessSites { pid: 7, name: "worker", sites: &worker },
        ];
        assert_eq!(
            folded_lines(&processes, Weight::Allocated),
            [
                "node (pid 4242);[JS]_[j];handler (app.js:17)_[j];Builtins_ArrayConstructor;\
                 v8::internal::Heap::AllocateRaw;mmap 4194304",
                "node (pid 4242);[unknown] 512",
                "node (pid 4242);odd:name;do_brk_flags_[k] 4096",
                "worker (pid 7);work (w.js:3)_[j] 100",
            ]
        );
    }

    #[test]
    fn folded_lines_by_live_bytes_drop_what_was_freed() {
        let node = node_sites();
        let processes = [ProcessSites { pid: 4242, name: "node", sites: &node }];
        assert_eq!(
            folded_lines(&processes, Weight::Live),
            [
                "node (pid 4242);[JS]_[j];handler (app.js:17)_[j];Builtins_ArrayConstructor;\
                 v8::internal::Heap::AllocateRaw;mmap 1048576",
                "node (pid 4242);[unknown] 512",
                "node (pid 4242);odd:name;do_brk_flags_[k] 4096",
            ]
        );
    }

    #[test]
    fn names_that_would_break_a_folded_line_are_defused() {
        assert_eq!(sanitize("a;b\nc"), "a:b c");
        assert_eq!(sanitize("  "), "[unknown]");
        // Would be read as a second count column.
        assert_eq!(sanitize("chunk 12"), "chunk\u{a0}12");
        assert_eq!(sanitize("v 1.5"), "v\u{a0}1.5");
        assert_eq!(sanitize("f(int, 2)"), "f(int, 2)");
        // Would be read as a comment.
        assert_eq!(sanitize("# x"), "#\u{a0}x");
    }

    #[test]
    fn the_svg_is_drawn_deterministically_with_kind_colours() {
        let (node, worker) = (node_sites(), worker_sites());
        let processes = [
            ProcessSites { pid: 4242, name: "node", sites: &node },
            ProcessSites { pid: 7, name: "worker", sites: &worker },
        ];
        let svg = String::from_utf8(render_svg(&processes, Weight::Allocated).unwrap()).unwrap();
        assert!(svg.contains("heaptrace: allocated bytes by stack"), "title");
        // Tooltips name the frame without the kind suffix, with its bytes.
        assert!(svg.contains("<title>handler (app.js:17) (4,194,304 bytes, "), "JS frame");
        assert!(svg.contains("<title>do_brk_flags (4,096 bytes, "), "kernel frame");
        assert!(!svg.contains("_[j]") && !svg.contains("_[k]"), "suffixes stripped");
        let fill = |name: &str, kind| {
            let c = colour(name, kind);
            format!("fill=\"rgb({},{},{})\"", c.r, c.g, c.b)
        };
        assert!(svg.contains(&fill("handler (app.js:17)_[j]", Some(FrameKind::Js))));
        assert!(svg.contains(&fill("Builtins_ArrayConstructor", Some(FrameKind::Builtin))));
        assert!(svg.contains(&fill("mmap", Some(FrameKind::Native))));
        assert!(svg.contains(&fill("do_brk_flags_[k]", Some(FrameKind::Kernel))));
        // inferno's "all" and the process roots are grey.
        assert!(svg.contains(&fill("", None)) && svg.contains(&fill("node (pid 4242)", None)));

        let reversed = [processes[1], processes[0]];
        assert_eq!(render_svg(&reversed, Weight::Allocated).unwrap(), svg.into_bytes(), "same bytes");
    }

    #[test]
    fn nothing_to_draw_is_an_error_not_an_empty_graph() {
        let freed = vec![site(100, 0, vec![frame("f", FrameKind::Js, None, None)])];
        let processes = [ProcessSites { pid: 1, name: "node", sites: &freed }];
        let err = render_svg(&processes, Weight::Live).unwrap_err();
        assert!(matches!(err, ExportError::NothingToDraw { what: "live bytes" }), "{err:?}");
        assert!(render_svg(&[], Weight::Allocated).is_err());
    }
}
