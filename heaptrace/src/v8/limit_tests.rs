//! The emulator on the exact code of `Heap::MaxReserved()` in each Node
//! build heaptrace is tested with (copied from the binaries, at their
//! link-time addresses), against a fake memory; and on what it must refuse.

use std::collections::HashMap;

use super::*;
use crate::v8::emulate::{BUDGET, EmulateError, Memory, call};

/// Memory as a map of little-endian 8-byte words and single bytes.
#[derive(Default)]
struct Fake {
    bytes: HashMap<u64, u8>,
    reads: usize,
}

impl Fake {
    fn word(mut self, addr: u64, v: u64) -> Self {
        for (i, b) in v.to_le_bytes().into_iter().enumerate() {
            self.bytes.insert(addr + i as u64, b);
        }
        self
    }
    fn byte(mut self, addr: u64, v: u8) -> Self {
        self.bytes.insert(addr, v);
        self
    }
}

impl Memory for Fake {
    fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), String> {
        self.reads += 1;
        for (i, b) in buf.iter_mut().enumerate() {
            *b = *self
                .bytes
                .get(&(addr + i as u64))
                .ok_or_else(|| format!("nothing at {:#x}", addr + i as u64))?;
        }
        Ok(())
    }
}

const HEAP: u64 = 0x2a0_1000;
const MIB: u64 = 1 << 20;

/// Node 18.20.8 (V8 10.2), and Node 20.20.2 (V8 11.3) and Debian's
/// libnode.so.108 (18) byte for byte: `3 * max_old_generation_size_ +
/// max_semi_space_size_`... as `mov 0xc8(%rdi),%rax; mov 0xe0(%rdi),%rdx;
/// lea (%rax,%rax,2),%rax; add %rdx,%rax; ret`.
const NODE_18_20: [u8; 22] = [
    0x48, 0x8b, 0x87, 0xc8, 0x00, 0x00, 0x00, 0x48, 0x8b, 0x97, 0xe0, 0x00, 0x00, 0x00, 0x48, 0x8d, 0x04,
    0x40, 0x48, 0x01, 0xd0, 0xc3,
];
/// Node 22.23.3: `cmpb $1, v8_flags+0x5fa(%rip); mov $2,%eax; mov
/// 0x48(%rdi),%rdx; adc $0,%rax; imul 0x30(%rdi),%rax; add %rdx,%rax; ret`.
const NODE_22: [u8; 29] = [
    0x80, 0x3d, 0x23, 0x11, 0x6c, 0x05, 0x01, 0xb8, 0x02, 0x00, 0x00, 0x00, 0x48, 0x8b, 0x57, 0x48, 0x48,
    0x83, 0xd0, 0x00, 0x48, 0x0f, 0xaf, 0x47, 0x30, 0x48, 0x01, 0xd0, 0xc3,
];
/// Node 24.21.0: `movzbl v8_flags+0x64a(%rip),%edx; mov $3,%eax; sub
/// %rdx,%rax; imul 0x30(%rdi),%rax; mov 0x50(%rdi),%rdx; add %rdx,%rax; ret`.
const NODE_24: [u8; 28] = [
    0x0f, 0xb6, 0x15, 0xc3, 0x6f, 0xc6, 0x05, 0xb8, 0x03, 0x00, 0x00, 0x00, 0x48, 0x29, 0xd0, 0x48, 0x0f,
    0xaf, 0x47, 0x30, 0x48, 0x8b, 0x57, 0x50, 0x48, 0x01, 0xd0, 0xc3,
];
/// Node 26.10.0: `push %rbp; mov %rsp,%rbp; mov 0x20(%rdi),%rdx; movzbl
/// v8_flags+0x75a(%rip),%ecx; xor $1,%cl; mov %rdx,%rax; shl %cl,%rax; mov
/// 0x7b8(%rdi),%rcx; mov 0x30(%rcx),%rcx; add %rdx,%rax; add %rcx,%rax; pop
/// %rbp; ret`.
const NODE_26: [u8; 43] = [
    0x55, 0x48, 0x89, 0xe5, 0x48, 0x8b, 0x57, 0x20, 0x0f, 0xb6, 0x0d, 0xcb, 0xc7, 0x3a, 0x06, 0x80, 0xf1,
    0x01, 0x48, 0x89, 0xd0, 0x48, 0xd3, 0xe0, 0x48, 0x8b, 0x8f, 0xb8, 0x07, 0x00, 0x00, 0x48, 0x8b, 0x49,
    0x30, 0x48, 0x01, 0xd0, 0x48, 0x01, 0xc8, 0x5d, 0xc3,
];

fn run(code: &[u8], address: u64, memory: &mut Fake) -> Result<u64, EmulateError> {
    call(code, address, &[HEAP], memory, BUDGET)
}

#[test]
fn node_18_and_20() {
    // 18.20.8, 20.20.2 and Debian's 18 at their own addresses.
    for address in [0xf4_39e0, 0x10f_01d0, 0xfe_4060] {
        let mut m = Fake::default().word(HEAP + 0xc8, 2048 * MIB).word(HEAP + 0xe0, 16 * MIB);
        assert_eq!(run(&NODE_18_20, address, &mut m), Ok(3 * 2048 * MIB + 16 * MIB));
        assert_eq!(m.reads, 2);
    }
}

#[test]
fn node_22_reads_a_flag_rip_relative() {
    // v8_flags + 0x5fa, from the instruction's address in the process.
    let flag = 0x6b2_b5fa;
    for (value, factor) in [(0u8, 3), (1, 2)] {
        let mut m =
            Fake::default().byte(flag, value).word(HEAP + 0x30, 8 * MIB).word(HEAP + 0x48, 2032 * MIB);
        assert_eq!(run(&NODE_22, 0x146_a4d0, &mut m), Ok(factor * 8 * MIB + 2032 * MIB), "flag {value}");
    }
    // Loaded elsewhere (a position-independent build), the flag moves with it.
    let mut m = Fake::default().byte(flag + 0x1000, 1).word(HEAP + 0x30, 1).word(HEAP + 0x48, 0);
    assert_eq!(run(&NODE_22, 0x146_a4d0 + 0x1000, &mut m), Ok(2));
}

#[test]
fn node_24() {
    let flag = 0x6b6_d64a;
    for (value, factor) in [(0u8, 3), (1, 2)] {
        let mut m =
            Fake::default().byte(flag, value).word(HEAP + 0x30, 16 * MIB).word(HEAP + 0x50, 4096 * MIB);
        assert_eq!(run(&NODE_24, 0xf0_6680, &mut m), Ok(factor * 16 * MIB + 4096 * MIB), "flag {value}");
    }
}

#[test]
fn node_26_chases_a_pointer_and_shifts_by_cl() {
    let flag = 0x72e_b75a;
    let other = 0x3_0000_0000;
    for (value, factor) in [(0u8, 3), (1, 2)] {
        let mut m = Fake::default()
            .byte(flag, value)
            .word(HEAP + 0x20, 16 * MIB)
            .word(HEAP + 0x7b8, other)
            .word(other + 0x30, 4144 * MIB);
        assert_eq!(run(&NODE_26, 0xf3_ef80, &mut m), Ok(factor * 16 * MIB + 4144 * MIB), "flag {value}");
    }
}

#[test]
fn an_unreadable_heap_is_an_error_that_says_where() {
    let err = run(&NODE_18_20, 0xf4_39e0, &mut Fake::default()).unwrap_err();
    let EmulateError::Read { ip, addr, len, .. } = err else { panic!("{err}") };
    assert_eq!((ip, addr, len), (0xf4_39e0, HEAP + 0xc8, 8));
}

#[test]
fn what_it_does_not_support_it_refuses() {
    let refused = |code: &[u8]| match call(code, 0x1000, &[HEAP], &mut Fake::default(), BUDGET) {
        Err(EmulateError::Unsupported { what, .. }) => what,
        other => panic!("{code:02x?}: {other:?}"),
    };
    // call rel32
    assert!(refused(&[0xe8, 0, 0, 0, 0, 0xc3]).contains("Call"));
    // mov %rax,(%rdi): a write to the process
    assert!(refused(&[0x48, 0x89, 0x07, 0xc3]).contains("write"));
    // mov %rbx,%rax; ret: rbx holds nothing known at entry
    assert!(refused(&[0x48, 0x89, 0xd8, 0xc3]).contains("no known value"));
    // jmp to itself: a loop
    assert!(refused(&[0xeb, 0xfe]).contains("not forward"));
    // mov %fs:0x28,%rax: thread-local
    assert!(refused(&[0x64, 0x48, 0x8b, 0x04, 0x25, 0x28, 0, 0, 0, 0xc3]).contains("thread-local"));
    // imul %rdi,%rdi; sete %al: ZF is undefined after imul
    assert!(refused(&[0x48, 0x0f, 0xaf, 0xff, 0x0f, 0x94, 0xc0, 0xc3]).contains("ZF"));
    // push %rdi; ret: returns elsewhere
    assert!(refused(&[0x57, 0xc3]).contains("stack"));
    // movsd (%rdi),%xmm0
    assert!(refused(&[0xf2, 0x0f, 0x10, 0x07, 0xc3]).contains("Movsd"));
}

#[test]
fn it_stops_at_the_end_of_the_code_and_after_its_budget() {
    // mov %rdi,%rax and no ret.
    let err = call(&[0x48, 0x89, 0xf8], 0x1000, &[HEAP], &mut Fake::default(), BUDGET).unwrap_err();
    assert_eq!(err, EmulateError::PastTheEnd { ip: 0x1003 });
    let nops = [0x90; 8];
    let err = call(&nops, 0x1000, &[], &mut Fake::default(), 4).unwrap_err();
    assert_eq!(err, EmulateError::Budget(4));
    // Garbage.
    let err = call(&[0x0f, 0xff], 0x1000, &[], &mut Fake::default(), BUDGET).unwrap_err();
    assert!(matches!(err, EmulateError::Invalid { ip: 0x1000, .. }), "{err}");
}

#[test]
fn flags_conditions_and_forward_jumps() {
    // xor %eax,%eax; cmp $5,%rdi; setb %al; ret: 1 if rdi < 5.
    let setb = [0x31, 0xc0, 0x48, 0x83, 0xff, 0x05, 0x0f, 0x92, 0xc0, 0xc3];
    // mov $7,%eax; test %rdi,%rdi; je +3; mov %rdi,%rax (3 bytes); ret
    let je = [0xb8, 0x07, 0, 0, 0, 0x48, 0x85, 0xff, 0x74, 0x03, 0x48, 0x89, 0xf8, 0xc3];
    // mov $1,%eax; cmp $-1,%rdi (signed); cmovl %rdi,%rax; ret
    let cmovl = [0xb8, 0x01, 0, 0, 0, 0x48, 0x83, 0xff, 0xff, 0x48, 0x0f, 0x4c, 0xc7, 0xc3];
    // mov %rdi,%rax; sar $1,%rax; shr $60,%rdi; add %rdi,%rax; ret
    let shifts = [0x48, 0x89, 0xf8, 0x48, 0xd1, 0xf8, 0x48, 0xc1, 0xef, 0x3c, 0x48, 0x01, 0xf8, 0xc3];
    let mut m = Fake::default();
    let mut go = |code: &[u8], rdi: u64| call(code, 0x1000, &[rdi], &mut m, BUDGET).unwrap();
    assert_eq!((go(&setb, 4), go(&setb, 5), go(&setb, u64::MAX)), (1, 0, 0));
    assert_eq!((go(&je, 0), go(&je, 9)), (7, 9));
    assert_eq!((go(&cmovl, (-2i64) as u64), go(&cmovl, 0)), ((-2i64) as u64, 1));
    assert_eq!(go(&shifts, (-8i64) as u64), 11);
    // A 32-bit write clears the upper half: mov $-1,%rax; mov %edi,%eax; ret
    assert_eq!(go(&[0x48, 0xc7, 0xc0, 0xff, 0xff, 0xff, 0xff, 0x89, 0xf8, 0xc3], u64::MAX), 0xffff_ffff);
}

#[test]
fn the_function_is_found_by_either_mangled_name() {
    let data: Vec<u8> = (0..=255).collect();
    let f = MaxReservedFn::from_symbol(&data, MANGLED[0], 0x40_0010, 22, 0x10).unwrap();
    assert_eq!((f.vaddr, f.file_offset, f.code.len(), f.code[0]), (0x40_0010, 0x10, 22, 0x10));
    assert!(MaxReservedFn::from_symbol(&data, MANGLED[1], 0, 0, 0xf0).is_some_and(|f| f.code.len() == 16));
    assert!(MaxReservedFn::from_symbol(&data, "_ZNK2v88internal4Heap11MaxCapacityEv", 0, 4, 0).is_none());
    assert!(MaxReservedFn::from_symbol(&data, MANGLED[0], 0, 4, 0x1000).is_none());
}

#[test]
fn the_old_generations_limit_is_the_word_the_result_follows_one_for_one() {
    let limits_of = |code: &[u8], address: u64, m: &mut Fake| super::limits(code, address, HEAP, m).unwrap();
    // 18/20: 3 semi-spaces of 16 MiB and a 96 MiB old generation.
    let mut m = Fake::default().word(HEAP + 0xc8, 16 * MIB).word(HEAP + 0xe0, 96 * MIB);
    let l = limits_of(&NODE_18_20, 0xf4_39e0, &mut m);
    assert_eq!(l, HeapLimits { heap_size_limit: 144 * MIB, old_generation: Some(96 * MIB) });
    // 22 and 24, with either flag value.
    for value in [0u8, 1] {
        let mut m =
            Fake::default().byte(0x6b2_b5fa, value).word(HEAP + 0x30, 16 * MIB).word(HEAP + 0x48, 96 * MIB);
        assert_eq!(limits_of(&NODE_22, 0x146_a4d0, &mut m).old_generation, Some(96 * MIB));
        let mut m =
            Fake::default().byte(0x6b6_d64a, value).word(HEAP + 0x30, 64 * MIB).word(HEAP + 0x50, 96 * MIB);
        assert_eq!(limits_of(&NODE_24, 0xf0_6680, &mut m).old_generation, Some(96 * MIB));
    }
    // 26: a pointer on the way (moving it reads elsewhere: no size), and a
    // shift by 0 makes the semi-space count twice, still not one for one.
    for value in [0u8, 1] {
        let other = 0x3_0000_0000;
        let mut m = Fake::default()
            .byte(0x72e_b75a, value)
            .word(HEAP + 0x20, 32 * MIB)
            .word(HEAP + 0x7b8, other)
            .word(other + 0x30, 96 * MIB);
        assert_eq!(limits_of(&NODE_26, 0xf3_ef80, &mut m).old_generation, Some(96 * MIB), "flag {value}");
    }
}
