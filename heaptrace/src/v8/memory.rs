//! Reading another process's memory: the one trait the V8 readers share
//! (the emulator behind the heap limit, and the JS frame namer), and its
//! implementation over `process_vm_readv`. Tests give their own fake.

use std::io::IoSliceMut;

use nix::{
    sys::uio::{RemoteIoVec, process_vm_readv},
    unistd::Pid,
};

/// Where memory comes from: the traced process, or a test's fake.
pub trait Memory {
    /// Fills `buf` from `addr`, wholly or not at all.
    fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), String>;
}

/// Another process's memory, read with `process_vm_readv`: the same
/// permission as ptrace's attach, and the process is not stopped. One
/// system call per read, whatever its size (the cost that matters when
/// naming frames is the number of reads, not their length).
#[derive(Clone, Copy, Debug)]
pub struct ProcessMemory {
    pid: u32,
}

impl ProcessMemory {
    pub fn new(pid: u32) -> Self {
        Self { pid }
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }
}

impl Memory for ProcessMemory {
    fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), String> {
        let len = buf.len();
        if len == 0 {
            return Ok(());
        }
        let base = usize::try_from(addr).map_err(|_| format!("address {addr:#x} out of range"))?;
        let remote = [RemoteIoVec { base, len }];
        match process_vm_readv(Pid::from_raw(self.pid as i32), &mut [IoSliceMut::new(buf)], &remote) {
            Ok(n) if n == len => Ok(()),
            Ok(n) => Err(format!("read {n} of {len} bytes")),
            Err(e) => Err(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_its_own_process_and_refuses_unmapped_memory() {
        let data = [7u8, 1, 2, 3, 4, 5, 6, 7, 8];
        let mut memory = ProcessMemory::new(std::process::id());
        let mut buf = [0u8; 9];
        memory.read(data.as_ptr() as u64, &mut buf).unwrap();
        assert_eq!(buf, data);
        assert!(memory.read(8, &mut buf).is_err(), "page zero is never mapped");
        memory.read(8, &mut []).unwrap();
    }
}
