use super::*;

fn js(name: &str, line: u32) -> Frame {
    Frame {
        function: name.into(),
        file: Some("/srv/app.js".into()),
        line: Some(line),
        kind: FrameKind::Js,
        build_id: None,
    }
}

fn native(name: &str) -> Frame {
    Frame {
        function: name.into(),
        file: Some("/usr/bin/node".into()),
        line: None,
        kind: FrameKind::Native,
        build_id: None,
    }
}

const MIB: u64 = 1 << 20;
const V8_PAGE: u64 = 256 << 10;

#[test]
fn calls_add_up_per_site_and_unmaps_take_live_bytes_off() {
    let mut t = SiteTable::default();
    t.define(1, vec![native("mmap"), js("handler", 17)]);
    t.mapped(0x1000_0000, MIB, Some(1));
    t.mapped(0x2000_0000, MIB, Some(1));
    t.unmapped(0x1000_0000, MIB);
    let sites = t.sites();
    assert_eq!(sites.len(), 1);
    let s = &sites[0];
    assert_eq!((s.bytes, s.live_bytes, s.count), (2 * MIB, MIB, 2));
    assert_eq!(s.first_js_frame().unwrap().label(), "handler (app.js:17)");
    assert_eq!(s.headline(), "handler (app.js:17)");
}

#[test]
fn the_headline_is_the_applications_function() {
    let node_internal = Frame { file: Some("node:internal/buffer".into()), ..js("createUnsafeBuffer", 1063) };
    let site = AllocationSite {
        bytes: 1,
        live_bytes: 1,
        live_v8_bytes: 0,
        count: 1,
        frames: vec![native("mmap"), node_internal, js("hoard", 12), js("tick", 30)],
    };
    assert_eq!(site.headline(), "hoard (app.js:12)");
    assert_eq!(site.headline_with_caller(), "hoard (app.js:12) \u{2190} tick (app.js:30)");
    let native_only = AllocationSite { frames: vec![native("mmap")], ..site.clone() };
    assert_eq!(native_only.headline(), "mmap");
    // V8's page allocator says how, the frame past it says why.
    let libc = Frame { file: Some("/usr/lib/x86_64-linux-gnu/libc.so.6".into()), ..native("__mprotect") };
    let gc_page = AllocationSite {
        frames: vec![
            libc,
            native("v8::base::OS::SetPermissions"),
            native("v8::internal::MemoryAllocator::AllocatePage"),
            native("v8::internal::SemiSpace::Commit"),
            native("v8::internal::MemoryAllocator::Unmapper::X"),
            native("v8::internal::Heap::PerformGarbageCollection"),
        ],
        ..site.clone()
    };
    assert_eq!(
        gc_page.headline_with_caller(),
        "v8::internal::SemiSpace::Commit \u{2190} v8::internal::Heap::PerformGarbageCollection"
    );
}

#[test]
fn stacks_with_the_same_names_are_one_site() {
    // Two closures of one function: two JSFunctions, two kernel stacks.
    let mut t = SiteTable::default();
    t.define(1, vec![js("handler", 17)]);
    t.define(2, vec![js("handler", 17)]);
    t.mapped(0x1000_0000, MIB, Some(1));
    t.mapped(0x2000_0000, MIB, Some(2));
    assert_eq!(t.sites().len(), 1);
    assert_eq!(t.sites()[0].count, 2);
}

#[test]
fn a_partial_unmap_takes_off_only_what_it_covers() {
    let mut t = SiteTable::default();
    t.define(1, vec![js("a", 1)]);
    t.mapped(0x1000_0000, 4 * MIB, Some(1));
    t.unmapped(0x1000_0000 + MIB, MIB);
    assert_eq!(t.sites()[0].live_bytes, 3 * MIB);
    // Unmapping a range twice, or a hole, changes nothing.
    t.unmapped(0x1000_0000 + MIB, MIB);
    t.unmapped(0x9000_0000, MIB);
    assert_eq!(t.sites()[0].live_bytes, 3 * MIB);
}

#[test]
fn commits_decommits_and_v8_chunks() {
    let mut t = SiteTable::default();
    t.define(1, vec![js("fill", 3)]);
    // A V8 page: reserved PROT_NONE (no stack), then committed.
    t.mapped(0x4000_0000, V8_PAGE, None);
    t.protected(0x4000_0000, V8_PAGE, true, false, Some(1));
    let s = &t.sites()[0];
    assert_eq!((s.live_bytes, s.live_v8_bytes), (V8_PAGE, V8_PAGE));
    // Flipping to read-only keeps it; PROT_NONE decommits it.
    t.protected(0x4000_0000, V8_PAGE, false, false, None);
    assert_eq!(t.sites()[0].live_bytes, V8_PAGE);
    t.protected(0x4000_0000, V8_PAGE, false, true, None);
    assert_eq!((t.sites()[0].live_bytes, t.sites()[0].live_v8_bytes), (0, 0));
    // A malloc'd block is native (not on V8's alignment).
    t.mapped(0x5000_1000, MIB, Some(1));
    let s = &t.sites()[0];
    assert_eq!((s.live_bytes, s.live_v8_bytes), (MIB, 0));
}

#[test]
fn a_new_mapping_over_an_owned_range_replaces_it() {
    let mut t = SiteTable::default();
    t.define(1, vec![js("a", 1)]);
    t.define(2, vec![js("b", 2)]);
    t.mapped(0x1000_0000, 2 * MIB, Some(1));
    t.mapped(0x1000_0000, MIB, Some(2)); // MAP_FIXED over the first half
    let sites = t.sites();
    let live = |name: &str| sites.iter().find(|s| s.frames[0].function == name).unwrap().live_bytes;
    assert_eq!((live("a"), live("b")), (MIB, MIB));
}

#[test]
fn brk_growth_and_shrink() {
    let mut t = SiteTable::with_brk(0x100_0000);
    t.define(7, vec![native("sbrk"), js("grow", 9)]);
    t.brk(0x100_0000 + MIB, Some(7));
    t.brk(0x100_0000 + 3 * MIB, Some(7));
    assert_eq!((t.sites()[0].bytes, t.sites()[0].live_bytes), (3 * MIB, 3 * MIB));
    t.brk(0x100_0000 + 2 * MIB, None);
    assert_eq!(t.sites()[0].live_bytes, 2 * MIB);
}

#[test]
fn a_remap_moves_live_bytes_without_counting_a_call() {
    let mut t = SiteTable::default();
    t.define(1, vec![js("a", 1)]);
    t.mapped(0x1000_0000, MIB, Some(1));
    t.remapped(0x1000_0000, MIB, 0x3000_0000, 2 * MIB);
    let s = &t.sites()[0];
    assert_eq!((s.count, s.bytes, s.live_bytes), (1, MIB, 2 * MIB));
}

#[test]
fn unnamed_stacks_are_counted_not_attributed() {
    let mut t = SiteTable::default();
    t.mapped(0x1000_0000, MIB, Some(99));
    assert_eq!(t.unnamed_calls, 1);
    assert!(t.is_empty());
}

#[test]
fn growth_names_the_site_that_took_most_of_it() {
    let mut t = SiteTable::default();
    t.define(1, vec![js("leaky", 5)]);
    t.define(2, vec![js("steady", 8)]);
    t.mapped(0x1000_1000, MIB, Some(2));
    t.mark();
    t.mark();
    for i in 0..4 {
        t.mapped(0x2000_1000 + i * 2 * MIB, MIB, Some(1));
    }
    t.mapped(0x7000_1000, MIB, Some(2));
    let g = t.growth(false).unwrap();
    assert_eq!(g.site.frames[0].function, "leaky");
    assert_eq!(g.bytes, 4 * MIB);
    assert!((g.share - 0.8).abs() < 1e-9);
    assert!(t.growth(true).is_none(), "no V8 memory grew");
}

#[test]
fn sites_are_bounded() {
    let mut t = SiteTable::default();
    for i in 0..(MAX_SITES as u64 + 10) {
        t.define(i + 1, vec![js(&format!("f{i}"), 1)]);
        t.mapped(0x1000_0000 + i * 2 * MIB, MIB, Some(i + 1));
    }
    let sites = t.sites();
    assert!(sites.len() <= MAX_SITES);
    let other = sites.iter().find(|s| s.frames[0].function == "[other stacks]").unwrap();
    assert!(other.count >= 10);
    let total: u64 = sites.iter().map(|s| s.count).sum();
    assert_eq!(total, MAX_SITES as u64 + 10, "no call is lost");
}
