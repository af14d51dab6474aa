//! A tiny x86-64 emulator for small leaf functions, such as V8's
//! `Heap::MaxReserved()`: it runs the function's own machine code against
//! another process's memory, read-only, and returns what it returns (rax).
//!
//! It supports what such accessors are made of and nothing more: moves,
//! `lea`, integer arithmetic and logic with the flags they set, shifts,
//! `setcc`/`cmovcc`, `push`/`pop` (onto a stack of its own, never the
//! process's), forward jumps inside the function, and `ret`. Anything else
//! (a call, a write to memory that is not its own stack, a backward jump,
//! an undefined flag or a register read before it holds a known value) is
//! an error that names the instruction: it never guesses. Instructions are
//! decoded with iced-x86; an instruction budget bounds the run.

use iced_x86::{ConditionCode, Decoder, DecoderOptions, Instruction, Mnemonic, OpKind, Register};
use thiserror::Error;

/// Instructions run at most, by default: `MaxReserved` takes 5 to 12.
pub const BUDGET: usize = 64;

pub use super::memory::Memory;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum EmulateError {
    #[error("instruction at {ip:#x} ({bytes}) is not supported: {what}")]
    Unsupported { ip: u64, bytes: String, what: String },
    #[error("cannot decode the instruction at {ip:#x} ({bytes})")]
    Invalid { ip: u64, bytes: String },
    #[error("the function ran past its end at {ip:#x} without returning")]
    PastTheEnd { ip: u64 },
    #[error("no return after {0} instructions")]
    Budget(usize),
    #[error("reading {len} bytes at {addr:#x} (instruction at {ip:#x}): {reason}")]
    Read { ip: u64, addr: u64, len: usize, reason: String },
}

/// A value and which of its bits are known. Registers the caller did not
/// set, and flags an instruction leaves undefined, are not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Val {
    v: u64,
    known: u64,
}

impl Val {
    const UNKNOWN: Val = Val { v: 0, known: 0 };
    fn known(v: u64) -> Val {
        Val { v, known: u64::MAX }
    }
}

fn mask(bytes: usize) -> u64 {
    if bytes >= 8 { u64::MAX } else { (1u64 << (bytes * 8)) - 1 }
}

fn sign_bit(bytes: usize) -> u64 {
    1u64 << (bytes * 8 - 1)
}

/// A fake stack, far from any user-space address, so that nothing the
/// function does to its stack can be mistaken for the process's memory.
const STACK_TOP: u64 = 0xffff_8000_0001_0000;
const STACK_BYTES: u64 = 4096;
/// The return address the emulated call returns to.
const RETURN_TO: u64 = 0xffff_8000_dead_0000;

#[derive(Clone, Copy, Default)]
struct Flags {
    cf: Option<bool>,
    zf: Option<bool>,
    sf: Option<bool>,
    of: Option<bool>,
}

struct Machine<'m> {
    regs: [Val; 16],
    flags: Flags,
    /// 8-byte slots of the fake stack, by address.
    stack: Vec<(u64, Val)>,
    memory: &'m mut dyn Memory,
    /// The instruction being run, for errors.
    ip: u64,
    bytes: String,
}

/// Calls the function whose code is `code`, loaded at `address` in the
/// process `memory` reads, with integer arguments `args` (rdi, rsi, rdx,
/// rcx, r8, r9), and returns rax. At most `budget` instructions run.
pub fn call(
    code: &[u8],
    address: u64,
    args: &[u64],
    memory: &mut dyn Memory,
    budget: usize,
) -> Result<u64, EmulateError> {
    let mut m = Machine {
        regs: [Val::UNKNOWN; 16],
        flags: Flags::default(),
        stack: vec![(STACK_TOP, Val::known(RETURN_TO))],
        memory,
        ip: address,
        bytes: String::new(),
    };
    const ARG_REGS: [Register; 6] =
        [Register::RDI, Register::RSI, Register::RDX, Register::RCX, Register::R8, Register::R9];
    for (reg, arg) in ARG_REGS.iter().zip(args) {
        m.regs[gpr_index(*reg).expect("a general-purpose register")] = Val::known(*arg);
    }
    m.regs[gpr_index(Register::RSP).expect("a general-purpose register")] = Val::known(STACK_TOP);

    let mut decoder = Decoder::with_ip(64, code, address, DecoderOptions::NONE);
    for _ in 0..budget {
        if !decoder.can_decode() {
            return Err(EmulateError::PastTheEnd { ip: decoder.ip() });
        }
        let at = decoder.position();
        let instr = decoder.decode();
        m.ip = instr.ip();
        m.bytes = code[at..(at + instr.len()).min(code.len())].iter().map(|b| format!("{b:02x}")).collect();
        if instr.is_invalid() {
            return Err(EmulateError::Invalid { ip: m.ip, bytes: m.bytes.clone() });
        }
        match m.step(&instr)? {
            Next::Fall => {}
            Next::Return(rax) => return Ok(rax),
            Next::Jump(target) => {
                // Forward only, and inside the function: no loops.
                let end = address + code.len() as u64;
                if target <= instr.ip() || target >= end {
                    return Err(
                        m.unsupported(format!("a jump to {target:#x}, not forward inside the function"))
                    );
                }
                decoder.set_ip(target);
                decoder
                    .set_position((target - address) as usize)
                    .map_err(|e| m.unsupported(format!("a jump to {target:#x}: {e}")))?;
            }
        }
    }
    Err(EmulateError::Budget(budget))
}

enum Next {
    Fall,
    Jump(u64),
    Return(u64),
}

/// RAX..R15 as 0..15, for any size of general-purpose register except
/// the high bytes (AH, BH, CH, DH).
fn gpr_index(reg: Register) -> Option<usize> {
    if !reg.is_gpr() || matches!(reg, Register::AH | Register::BH | Register::CH | Register::DH) {
        return None;
    }
    let full = reg.full_register() as usize;
    (Register::RAX as usize..=Register::R15 as usize).contains(&full).then(|| full - Register::RAX as usize)
}

impl Machine<'_> {
    fn unsupported(&self, what: impl Into<String>) -> EmulateError {
        EmulateError::Unsupported { ip: self.ip, bytes: self.bytes.clone(), what: what.into() }
    }

    fn gpr(&self, reg: Register) -> Result<usize, EmulateError> {
        gpr_index(reg).ok_or_else(|| self.unsupported(format!("register {reg:?}")))
    }

    /// The operand's size in bytes.
    fn size(&self, instr: &Instruction, op: u32) -> Result<usize, EmulateError> {
        match instr.op_kind(op) {
            OpKind::Register => Ok(instr.op_register(op).size()),
            OpKind::Memory => Ok(instr.memory_size().size()),
            kind => Err(self.unsupported(format!("the size of a {kind:?} operand"))),
        }
    }

    fn require(&self, val: Val, bytes: usize, what: &str) -> Result<u64, EmulateError> {
        let m = mask(bytes);
        if val.known & m != m {
            return Err(self.unsupported(format!("it reads {what}, which holds no known value")));
        }
        Ok(val.v & m)
    }

    fn flag(&self, flag: Option<bool>, name: &str) -> Result<bool, EmulateError> {
        flag.ok_or_else(|| self.unsupported(format!("it reads {name}, which is undefined here")))
    }

    /// The address of the memory operand.
    fn address(&self, instr: &Instruction) -> Result<u64, EmulateError> {
        if matches!(instr.memory_segment(), Register::FS | Register::GS) {
            return Err(self.unsupported("thread-local (fs/gs) memory"));
        }
        if instr.is_ip_rel_memory_operand() {
            if instr.memory_base() != Register::RIP {
                return Err(self.unsupported("32-bit addressing"));
            }
            // The decoder runs at the function's address in the process,
            // so this is the operand's address there.
            return Ok(instr.ip_rel_memory_address());
        }
        let mut addr = instr.memory_displacement64();
        if instr.memory_base() != Register::None {
            let base = self.regs[self.gpr(instr.memory_base())?];
            if instr.memory_base().size() != 8 {
                return Err(self.unsupported("32-bit addressing"));
            }
            addr = addr.wrapping_add(self.require(base, 8, "an address register")?);
        }
        if instr.memory_index() != Register::None {
            let index = self.regs[self.gpr(instr.memory_index())?];
            let index = self.require(index, 8, "an index register")?;
            addr = addr.wrapping_add(index.wrapping_mul(u64::from(instr.memory_index_scale())));
        }
        Ok(addr)
    }

    fn in_stack(addr: u64) -> bool {
        (STACK_TOP - STACK_BYTES..=STACK_TOP).contains(&addr)
    }

    fn load(&mut self, addr: u64, bytes: usize) -> Result<Val, EmulateError> {
        if Self::in_stack(addr) {
            if bytes != 8 {
                return Err(self.unsupported("a stack read of other than 8 bytes"));
            }
            return match self.stack.iter().find(|(a, _)| *a == addr) {
                Some((_, v)) => Ok(*v),
                None => Err(self.unsupported(format!("a read of the stack at {addr:#x}, never written"))),
            };
        }
        let mut buf = [0u8; 8];
        let ip = self.ip;
        self.memory.read(addr, &mut buf[..bytes]).map_err(|reason| EmulateError::Read {
            ip,
            addr,
            len: bytes,
            reason,
        })?;
        Ok(Val::known(u64::from_le_bytes(buf)))
    }

    fn store_stack(&mut self, addr: u64, val: Val) -> Result<(), EmulateError> {
        if !Self::in_stack(addr) {
            return Err(self.unsupported(format!("a write to {addr:#x}: only its own stack is written")));
        }
        self.stack.retain(|(a, _)| *a != addr);
        self.stack.push((addr, val));
        Ok(())
    }

    /// Reads operand `op` (register, memory or immediate), `bytes` wide.
    fn read(&mut self, instr: &Instruction, op: u32, bytes: usize) -> Result<Val, EmulateError> {
        let m = mask(bytes);
        let val = match instr.op_kind(op) {
            OpKind::Register => {
                let reg = instr.op_register(op);
                self.regs[self.gpr(reg)?]
            }
            OpKind::Memory => {
                let addr = self.address(instr)?;
                self.load(addr, bytes)?
            }
            OpKind::Immediate8
            | OpKind::Immediate16
            | OpKind::Immediate32
            | OpKind::Immediate64
            | OpKind::Immediate8to16
            | OpKind::Immediate8to32
            | OpKind::Immediate8to64
            | OpKind::Immediate32to64 => {
                Val::known(instr.try_immediate(op).map_err(|e| self.unsupported(e.to_string()))?)
            }
            kind => return Err(self.unsupported(format!("a {kind:?} operand"))),
        };
        Ok(Val { v: val.v & m, known: val.known & m })
    }

    /// Writes a register operand with x86-64's rules: a 32-bit write
    /// clears the upper half, 8- and 16-bit writes keep the rest.
    fn write(&mut self, instr: &Instruction, op: u32, val: Val) -> Result<(), EmulateError> {
        match instr.op_kind(op) {
            OpKind::Register => {
                let reg = instr.op_register(op);
                let i = self.gpr(reg)?;
                let old = self.regs[i];
                self.regs[i] = match reg.size() {
                    8 => val,
                    4 => Val { v: val.v & mask(4), known: (val.known & mask(4)) | !mask(4) },
                    n => {
                        let m = mask(n);
                        Val { v: (old.v & !m) | (val.v & m), known: (old.known & !m) | (val.known & m) }
                    }
                };
                Ok(())
            }
            OpKind::Memory => {
                let addr = self.address(instr)?;
                if self.size(instr, op)? != 8 {
                    return Err(self.unsupported("a memory write of other than 8 bytes"));
                }
                self.store_stack(addr, val)
            }
            kind => Err(self.unsupported(format!("a write to a {kind:?} operand"))),
        }
    }

    fn set_result_flags(&mut self, res: u64, bytes: usize) {
        self.flags.zf = Some(res & mask(bytes) == 0);
        self.flags.sf = Some(res & sign_bit(bytes) != 0);
    }

    fn condition(&self, cc: ConditionCode) -> Result<bool, EmulateError> {
        let f = self.flags;
        let cf = || self.flag(f.cf, "CF");
        let zf = || self.flag(f.zf, "ZF");
        let sf = || self.flag(f.sf, "SF");
        let of = || self.flag(f.of, "OF");
        Ok(match cc {
            ConditionCode::o => of()?,
            ConditionCode::no => !of()?,
            ConditionCode::b => cf()?,
            ConditionCode::ae => !cf()?,
            ConditionCode::e => zf()?,
            ConditionCode::ne => !zf()?,
            ConditionCode::be => cf()? || zf()?,
            ConditionCode::a => !cf()? && !zf()?,
            ConditionCode::s => sf()?,
            ConditionCode::ns => !sf()?,
            ConditionCode::l => sf()? != of()?,
            ConditionCode::ge => sf()? == of()?,
            ConditionCode::le => zf()? || sf()? != of()?,
            ConditionCode::g => !zf()? && sf()? == of()?,
            other => return Err(self.unsupported(format!("condition {other:?}"))),
        })
    }

    fn step(&mut self, instr: &Instruction) -> Result<Next, EmulateError> {
        if instr.has_lock_prefix() || instr.has_rep_prefix() || instr.has_repne_prefix() {
            return Err(self.unsupported("a lock or rep prefix"));
        }
        match instr.mnemonic() {
            Mnemonic::Nop | Mnemonic::Endbr64 => {}
            Mnemonic::Mov => {
                let bytes = self.size(instr, 0)?;
                let v = self.read(instr, 1, bytes)?;
                self.write(instr, 0, v)?;
            }
            Mnemonic::Movzx | Mnemonic::Movsx | Mnemonic::Movsxd => {
                let (to, from) = (self.size(instr, 0)?, self.size(instr, 1)?);
                let v = self.read(instr, 1, from)?;
                let v = if instr.mnemonic() == Mnemonic::Movzx {
                    Val { v: v.v, known: v.known | !mask(from) }
                } else {
                    let x = self.require(v, from, "a register")?;
                    let extended = if x & sign_bit(from) != 0 { x | !mask(from) } else { x };
                    Val::known(extended & mask(to))
                };
                self.write(instr, 0, v)?;
            }
            Mnemonic::Lea => {
                let bytes = self.size(instr, 0)?;
                let addr = self.address(instr)?;
                self.write(instr, 0, Val::known(addr & mask(bytes)))?;
            }
            Mnemonic::Add
            | Mnemonic::Adc
            | Mnemonic::Sub
            | Mnemonic::Sbb
            | Mnemonic::Cmp
            | Mnemonic::And
            | Mnemonic::Or
            | Mnemonic::Xor
            | Mnemonic::Test => self.alu(instr)?,
            Mnemonic::Imul => self.imul(instr)?,
            Mnemonic::Shl | Mnemonic::Shr | Mnemonic::Sar => self.shift(instr)?,
            Mnemonic::Sete
            | Mnemonic::Setne
            | Mnemonic::Setb
            | Mnemonic::Setae
            | Mnemonic::Setbe
            | Mnemonic::Seta
            | Mnemonic::Sets
            | Mnemonic::Setns
            | Mnemonic::Seto
            | Mnemonic::Setno
            | Mnemonic::Setl
            | Mnemonic::Setge
            | Mnemonic::Setle
            | Mnemonic::Setg => {
                let set = self.condition(instr.condition_code())?;
                self.write(instr, 0, Val::known(u64::from(set)))?;
            }
            Mnemonic::Cmove
            | Mnemonic::Cmovne
            | Mnemonic::Cmovb
            | Mnemonic::Cmovae
            | Mnemonic::Cmovbe
            | Mnemonic::Cmova
            | Mnemonic::Cmovs
            | Mnemonic::Cmovns
            | Mnemonic::Cmovo
            | Mnemonic::Cmovno
            | Mnemonic::Cmovl
            | Mnemonic::Cmovge
            | Mnemonic::Cmovle
            | Mnemonic::Cmovg => {
                let bytes = self.size(instr, 0)?;
                let v = if self.condition(instr.condition_code())? {
                    self.read(instr, 1, bytes)?
                } else {
                    // Not moved, but a 32-bit cmov still clears the upper half.
                    self.read(instr, 0, bytes)?
                };
                self.write(instr, 0, v)?;
            }
            Mnemonic::Push => {
                if instr.op_kind(0) != OpKind::Register || self.size(instr, 0)? != 8 {
                    return Err(self.unsupported("a push of other than a 64-bit register"));
                }
                let v = self.read(instr, 0, 8)?;
                let rsp = self.gpr(Register::RSP)?;
                let top = self.require(self.regs[rsp], 8, "rsp")?.wrapping_sub(8);
                self.store_stack(top, v)?;
                self.regs[rsp] = Val::known(top);
            }
            Mnemonic::Pop => {
                if instr.op_kind(0) != OpKind::Register || self.size(instr, 0)? != 8 {
                    return Err(self.unsupported("a pop into other than a 64-bit register"));
                }
                let rsp = self.gpr(Register::RSP)?;
                let top = self.require(self.regs[rsp], 8, "rsp")?;
                let v = self.load(top, 8)?;
                self.regs[rsp] = Val::known(top.wrapping_add(8));
                self.write(instr, 0, v)?;
            }
            Mnemonic::Ret => {
                if instr.op_count() != 0 {
                    return Err(self.unsupported("ret with an operand"));
                }
                let rsp = self.regs[self.gpr(Register::RSP)?];
                let top = self.require(rsp, 8, "rsp")?;
                let to = self.load(top, 8)?;
                if to != Val::known(RETURN_TO) || top != STACK_TOP {
                    return Err(self.unsupported("a return with the stack not as it was at entry"));
                }
                let rax = self.regs[self.gpr(Register::RAX)?];
                return Ok(Next::Return(self.require(rax, 8, "rax")?));
            }
            Mnemonic::Jmp if instr.is_jmp_short_or_near() => {
                return Ok(Next::Jump(instr.near_branch_target()));
            }
            _ if instr.is_jcc_short_or_near() => {
                return Ok(if self.condition(instr.condition_code())? {
                    Next::Jump(instr.near_branch_target())
                } else {
                    Next::Fall
                });
            }
            other => return Err(self.unsupported(format!("{other:?}"))),
        }
        Ok(Next::Fall)
    }

    /// add, adc, sub, sbb, cmp, and, or, xor, test.
    fn alu(&mut self, instr: &Instruction) -> Result<(), EmulateError> {
        let op = instr.mnemonic();
        let bytes = self.size(instr, 0)?;
        let (m, sign) = (mask(bytes), sign_bit(bytes));
        // `xor r, r` (and `sub r, r`) is zero whatever r held.
        let same_register = instr.op_kind(0) == OpKind::Register
            && instr.op_kind(1) == OpKind::Register
            && instr.op_register(0) == instr.op_register(1);
        let (a, b) = if same_register && matches!(op, Mnemonic::Xor | Mnemonic::Sub) {
            (0, 0)
        } else {
            let a = self.read(instr, 0, bytes)?;
            let b = self.read(instr, 1, bytes)?;
            (self.require(a, bytes, "an operand")?, self.require(b, bytes, "an operand")?)
        };
        let carry_in = match op {
            Mnemonic::Adc | Mnemonic::Sbb => u64::from(self.flag(self.flags.cf, "CF")?),
            _ => 0,
        };
        let (res, cf, of) = match op {
            Mnemonic::Add | Mnemonic::Adc => {
                let wide = u128::from(a) + u128::from(b) + u128::from(carry_in);
                let res = (wide as u64) & m;
                (res, wide > u128::from(m), (a ^ res) & (b ^ res) & sign != 0)
            }
            Mnemonic::Sub | Mnemonic::Sbb | Mnemonic::Cmp => {
                let res = a.wrapping_sub(b).wrapping_sub(carry_in) & m;
                (res, u128::from(a) < u128::from(b) + u128::from(carry_in), (a ^ b) & (a ^ res) & sign != 0)
            }
            Mnemonic::And | Mnemonic::Test => (a & b, false, false),
            Mnemonic::Or => (a | b, false, false),
            _ => (a ^ b, false, false),
        };
        self.flags = Flags { cf: Some(cf), of: Some(of), ..self.flags };
        self.set_result_flags(res, bytes);
        if !matches!(op, Mnemonic::Cmp | Mnemonic::Test) {
            self.write(instr, 0, Val::known(res))?;
        }
        Ok(())
    }

    /// imul r, r/m and imul r, r/m, imm (the one-operand form writes rdx:rax).
    fn imul(&mut self, instr: &Instruction) -> Result<(), EmulateError> {
        let (x, y) = match instr.op_count() {
            2 => (0, 1),
            3 => (1, 2),
            _ => return Err(self.unsupported("one-operand imul")),
        };
        let bytes = self.size(instr, 0)?;
        let signed = |v: u64| -> i128 {
            let bits = 128 - 8 * bytes as u32;
            (i128::from(v) << bits) >> bits
        };
        let a = self.read(instr, x, bytes)?;
        let b = self.read(instr, y, bytes)?;
        let (a, b) = (self.require(a, bytes, "an operand")?, self.require(b, bytes, "an operand")?);
        let product = signed(a) * signed(b);
        let res = (product as u64) & mask(bytes);
        let overflow = signed(res) != product;
        // SF and ZF are undefined after imul.
        self.flags = Flags { cf: Some(overflow), of: Some(overflow), sf: None, zf: None };
        self.write(instr, 0, Val::known(res))
    }

    /// shl, shr, sar of a 32- or 64-bit operand, by an immediate or cl.
    fn shift(&mut self, instr: &Instruction) -> Result<(), EmulateError> {
        let bytes = self.size(instr, 0)?;
        if bytes < 4 {
            return Err(self.unsupported("a shift of an 8- or 16-bit operand"));
        }
        let bits = 8 * bytes as u32;
        let a = self.read(instr, 0, bytes)?;
        let a = self.require(a, bytes, "an operand")?;
        let count = self.read(instr, 1, 1)?;
        // The count is masked to 5 or 6 bits, so 0 <= count < bits.
        let count = self.require(count, 1, "the shift count")? as u32 & (bits - 1);
        if count == 0 {
            // Neither the value nor the flags change.
            return self.write(instr, 0, Val::known(a));
        }
        let sign = a & sign_bit(bytes) != 0;
        let (res, cf) = match instr.mnemonic() {
            Mnemonic::Shl => ((a << count) & mask(bytes), (a >> (bits - count)) & 1 != 0),
            Mnemonic::Shr => (a >> count, (a >> (count - 1)) & 1 != 0),
            _ => {
                let signed = if sign { a | !mask(bytes) } else { a } as i64;
                ((signed >> count) as u64 & mask(bytes), (signed >> (count - 1)) & 1 != 0)
            }
        };
        // OF is defined for one-bit shifts only.
        let of = (count == 1).then(|| match instr.mnemonic() {
            Mnemonic::Shl => (res & sign_bit(bytes) != 0) != cf,
            Mnemonic::Shr => sign,
            _ => false,
        });
        self.flags = Flags { cf: Some(cf), of, ..self.flags };
        self.set_result_flags(res, bytes);
        self.write(instr, 0, Val::known(res))
    }
}
