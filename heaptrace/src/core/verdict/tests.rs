use super::*;

const MIB: f64 = 1048576.0;

/// Major GCs every `every` seconds for `secs`, the floor following `floor(t)`.
fn with_majors(e: &mut Evidence, secs: f64, every: f64, floor: impl Fn(f64) -> f64) {
    let mut t = 0.0;
    while t <= secs {
        let after = floor(t) as u64;
        e.gc(t, 0.005, true, after + (20 << 20), after);
        t += every;
    }
}

fn with_samples(e: &mut Evidence, secs: usize, native: impl Fn(f64) -> f64) {
    for s in 0..=secs {
        let t = s as f64;
        e.sample(t, native(t) as u64, (100.0 * MIB + native(t)) as u64);
    }
}

fn judge_now(e: &Evidence, now: f64, v8: bool) -> Verdict {
    judge(e, now, Limits::default(), &Verdict::unknown(""), v8)
}

#[test]
fn a_rising_floor_is_a_js_leak() {
    let mut e = Evidence::default();
    // 12 MiB/min with ±0.3 MiB of noise, a major GC every 10 s.
    with_majors(&mut e, 60.0, 10.0, |t| {
        50.0 * MIB
            + 12.0 * MIB * t / 60.0
            + if (t as u64 / 10).is_multiple_of(2) { 0.3 * MIB } else { -0.3 * MIB }
    });
    with_samples(&mut e, 60, |_| 30.0 * MIB);
    let v = judge_now(&e, 60.0, true);
    assert_eq!(v.state, VerdictState::Leak, "{v:?}");
    assert_eq!(v.memory, Some(MemoryKind::JsHeap));
    let slope = v.slope_bytes_per_s.unwrap() * 60.0 / MIB;
    assert!((slope - 12.0).abs() < 1.0, "{slope}");
    assert_eq!(v.basis.unwrap().source, BasisSource::MajorGcs);
    assert!(v.evidence.starts_with("leak: JS heap floor"), "{}", v.evidence);
}

#[test]
fn a_seesaw_with_a_flat_floor_is_steady() {
    let mut e = Evidence::default();
    with_majors(&mut e, 120.0, 10.0, |t| {
        50.0 * MIB + if (t as u64 / 10).is_multiple_of(2) { MIB } else { 0.0 }
    });
    with_samples(&mut e, 120, |t| 30.0 * MIB + (t as u64 % 7) as f64 * MIB);
    let v = judge_now(&e, 120.0, true);
    assert_eq!(v.state, VerdictState::Steady, "{v:?}");
    assert_eq!(v.time_to_limit_s, None);
}

#[test]
fn a_cache_warming_up_is_not_a_leak() {
    // Rises 20 MiB in the first minute, then flat for two: the later half
    // of the window is flat, so the rise is not sustained.
    let mut e = Evidence::default();
    with_majors(&mut e, 180.0, 10.0, |t| 50.0 * MIB + 20.0 * MIB * (t.min(60.0) / 60.0));
    with_samples(&mut e, 180, |_| 30.0 * MIB);
    let v = judge_now(&e, 180.0, true);
    assert_ne!(v.state, VerdictState::Leak, "{v:?}");
    // Every moment of the run: growing at worst, never a leak.
    let mut e = Evidence::default();
    let mut t: f64 = 0.0;
    while t <= 180.0 {
        let floor = 50.0 * MIB + 20.0 * MIB * (t.min(30.0) / 30.0);
        e.gc(t, 0.005, true, floor as u64 + (20 << 20), floor as u64);
        e.sample(t, (30.0 * MIB) as u64, (100.0 * MIB) as u64);
        let v = judge_now(&e, t, true);
        assert_ne!(v.state, VerdictState::Leak, "at {t} s: {v:?}");
        t += 5.0;
    }
}

#[test]
fn a_spike_that_falls_back_is_not_a_leak() {
    let mut e = Evidence::default();
    with_majors(&mut e, 120.0, 10.0, |t| if (40.0..70.0).contains(&t) { 150.0 * MIB } else { 50.0 * MIB });
    with_samples(&mut e, 120, |_| 30.0 * MIB);
    assert_ne!(judge_now(&e, 120.0, true).state, VerdictState::Leak);
}

#[test]
fn growing_native_memory_with_a_flat_floor_is_a_native_leak() {
    let mut e = Evidence::default();
    with_majors(&mut e, 60.0, 10.0, |_| 50.0 * MIB);
    with_samples(&mut e, 60, |t| 30.0 * MIB + 10.0 * MIB * t / 60.0);
    let v = judge_now(&e, 60.0, true);
    assert_eq!((v.state, v.memory), (VerdictState::Leak, Some(MemoryKind::Native)), "{v:?}");
    assert_eq!(v.basis.unwrap().source, BasisSource::Samples);
}

#[test]
fn a_process_without_v8_is_judged_on_native_memory() {
    let mut e = Evidence::default();
    with_samples(&mut e, 60, |_| 30.0 * MIB);
    let v = judge_now(&e, 60.0, false);
    assert_eq!((v.state, v.memory), (VerdictState::Steady, Some(MemoryKind::Native)));
    let mut e = Evidence::default();
    with_samples(&mut e, 60, |t| 30.0 * MIB + 6.0 * MIB * t / 60.0);
    assert_eq!(judge_now(&e, 60.0, false).state, VerdictState::Leak);
}

#[test]
fn too_little_evidence_is_unknown() {
    let mut e = Evidence::default();
    with_majors(&mut e, 20.0, 10.0, |_| 50.0 * MIB);
    with_samples(&mut e, 10, |_| 30.0 * MIB);
    let v = judge_now(&e, 20.0, true);
    assert_eq!(v.state, VerdictState::Unknown, "{v:?}");
    assert!(v.evidence.starts_with("not enough evidence yet"));
}

#[test]
fn time_to_the_nearest_limit() {
    let mut e = Evidence::default();
    // Floor at 60 MiB at the end, +6 MiB/min: V8's 96 MiB in 6 minutes.
    with_majors(&mut e, 120.0, 10.0, |t| 48.0 * MIB + 6.0 * MIB * t / 60.0);
    with_samples(&mut e, 120, |_| 30.0 * MIB);
    let limits = Limits { v8_heap: Some((96.0 * MIB) as u64), cgroup: None };
    let v = judge(&e, 120.0, limits, &Verdict::unknown(""), true);
    assert_eq!(v.limit, Some(LimitKind::V8Heap));
    assert!((v.time_to_limit_s.unwrap() - 360.0).abs() < 5.0, "{v:?}");
    assert!(v.evidence.contains("V8's heap limit (96.0 MiB) in 6 min"), "{}", v.evidence);
    // A cgroup with 10 MiB of room left, and RSS growing 6 MiB/min: sooner.
    let mut e2 = e.clone();
    for s in 121..=240 {
        let t = s as f64;
        e2.sample(t, (30.0 * MIB) as u64, (130.0 * MIB + 6.0 * MIB * (t - 120.0) / 60.0) as u64);
    }
    let limits = Limits {
        v8_heap: Some((96.0 * MIB) as u64),
        cgroup: Some(((246.0 * MIB) as u64, (256.0 * MIB) as u64)),
    };
    let v = judge(&e2, 240.0, limits, &Verdict::unknown(""), true);
    assert_eq!(v.limit, Some(LimitKind::Cgroup), "{v:?}");
}

#[test]
fn gc_thrashing_near_the_limit() {
    let mut e = Evidence::default();
    with_majors(&mut e, 60.0, 10.0, |t| 40.0 * MIB + 50.0 * MIB * t / 60.0);
    // Then back-to-back mark-compacts that reclaim almost nothing.
    let mut t = 60.0;
    while t < 80.0 {
        e.gc(t, 0.4, true, (92.0 * MIB) as u64, (91.0 * MIB) as u64);
        t += 0.5;
    }
    let limits = Limits { v8_heap: Some((96.0 * MIB) as u64), cgroup: None };
    let v = judge(&e, 80.0, limits, &Verdict::unknown(""), true);
    assert_eq!((v.state, v.memory), (VerdictState::GcThrashing, Some(MemoryKind::JsHeap)), "{v:?}");
    assert_eq!(v.time_to_limit_s, Some(0.0));
}
