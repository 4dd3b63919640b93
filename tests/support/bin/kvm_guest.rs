//! A tiny KVM guest for tracer's end-to-end tests: each vCPU runs a few real-mode instructions
//! that exit to this VMM a known number of times (port writes, MMIO writes, one HLT), and the
//! exits this VMM saw are printed as JSON.
//!
//! Usage: kvm-guest OUTS MMIO_WRITES [VCPUS]
//!
//! With KVM_GUEST_WAIT set, it says "ready" once the VM and its vCPUs exist and runs them only
//! after a line on stdin, so that a tracer can be pointed at its pid first.

use std::{
    ptr::null_mut,
    sync::{Arc, Barrier},
};

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::{Kvm, VcpuExit};

const GUEST_ADDRESS: u64 = 0x1000;
const MEMORY_SIZE: usize = 0x4000;
/// Outside guest memory: writes there exit as MMIO.
const MMIO_ADDRESS: u16 = 0x8000;
pub const PORT: u16 = 0x3f8;

/// `OUTS` writes to PORT, `MMIO_WRITES` writes to MMIO_ADDRESS, then HLT.
fn code(outs: u16, mmio_writes: u16) -> Vec<u8> {
    let [port_lo, port_hi] = PORT.to_le_bytes();
    let [outs_lo, outs_hi] = outs.to_le_bytes();
    let [mmio_lo, mmio_hi] = mmio_writes.to_le_bytes();
    let [address_lo, address_hi] = MMIO_ADDRESS.to_le_bytes();
    vec![
        0xba, port_lo, port_hi, // mov dx, PORT
        0xb9, outs_lo, outs_hi, // mov cx, OUTS
        0xb0, b'a', // 1: mov al, 'a'
        0xee, // out dx, al
        0x49, // dec cx
        0x75, 0xfa, // jnz 1b
        0xb9, mmio_lo, mmio_hi, // mov cx, MMIO_WRITES
        0xa2, address_lo, address_hi, // 2: mov [MMIO_ADDRESS], al
        0x49,       // dec cx
        0x75, 0xfa, // jnz 2b
        0xf4, // hlt
    ]
}

fn main() {
    let args: Vec<u16> = std::env::args()
        .skip(1)
        .map(|arg| arg.parse().expect("a number"))
        .collect();
    let (outs, mmio_writes, vcpus) = match args[..] {
        [outs, mmio_writes] => (outs, mmio_writes, 1),
        [outs, mmio_writes, vcpus] => (outs, mmio_writes, vcpus),
        _ => panic!("usage: kvm-guest OUTS MMIO_WRITES [VCPUS]"),
    };
    assert!(outs > 0 && mmio_writes > 0, "loops run at least once");
    let kvm = Kvm::new().expect("open /dev/kvm");
    let vm = Arc::new(kvm.create_vm().expect("create a VM"));
    let memory = unsafe {
        libc::mmap(
            null_mut(),
            MEMORY_SIZE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_ANONYMOUS | libc::MAP_SHARED | libc::MAP_NORESERVE,
            -1,
            0,
        )
    } as *mut u8;
    assert!(memory as isize != -1, "mmap guest memory");
    let code = code(outs, mmio_writes);
    unsafe { std::ptr::copy_nonoverlapping(code.as_ptr(), memory, code.len()) };
    let region = kvm_userspace_memory_region {
        slot: 0,
        guest_phys_addr: GUEST_ADDRESS,
        memory_size: MEMORY_SIZE as u64,
        userspace_addr: memory as u64,
        flags: 0,
    };
    unsafe { vm.set_user_memory_region(region) }.expect("map guest memory");

    // Every vCPU is created before any runs, and (with KVM_GUEST_WAIT) before "ready".
    let start = Arc::new(Barrier::new(vcpus as usize + 1));
    let threads: Vec<_> = (0..vcpus)
        .map(|index| {
            let (vm, start) = (vm.clone(), start.clone());
            std::thread::spawn(move || {
                let mut vcpu = vm.create_vcpu(index as u64).expect("create a vCPU");
                let mut sregs = vcpu.get_sregs().expect("get sregs");
                (sregs.cs.base, sregs.cs.selector) = (0, 0);
                vcpu.set_sregs(&sregs).expect("set sregs");
                let mut regs = vcpu.get_regs().expect("get regs");
                (regs.rip, regs.rflags) = (GUEST_ADDRESS, 2);
                vcpu.set_regs(&regs).expect("set regs");
                start.wait();
                let (mut io, mut mmio) = (0u64, 0u64);
                loop {
                    match vcpu.run().expect("run the vCPU") {
                        VcpuExit::IoOut(port, _) if port == PORT => io += 1,
                        VcpuExit::MmioWrite(address, _) if address == MMIO_ADDRESS as u64 => {
                            mmio += 1
                        }
                        VcpuExit::Hlt => break,
                        other => panic!("unexpected exit {other:?}"),
                    }
                }
                (unsafe { libc::gettid() }, io, mmio)
            })
        })
        .collect();
    if std::env::var_os("KVM_GUEST_WAIT").is_some() {
        println!("ready");
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).expect("read stdin");
    }
    start.wait();
    let seen: Vec<String> = threads
        .into_iter()
        .map(|thread| {
            let (tid, io, mmio) = thread.join().expect("vCPU thread");
            format!(r#"{{"tid":{tid},"io":{io},"mmio":{mmio},"hlt":1}}"#)
        })
        .collect();
    println!(
        r#"{{"pid":{},"port":{PORT},"vcpus":[{}]}}"#,
        std::process::id(),
        seen.join(",")
    );
}
