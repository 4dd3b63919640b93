use which::which;

/// The build links with `bpf-linker`, a dependency cargo cannot see: rebuild when it changes.
fn main() {
    match which("bpf-linker") {
        Ok(linker) => println!("cargo:rerun-if-changed={}", linker.display()),
        Err(_) => println!("cargo:warning=bpf-linker is not installed: run `cargo xtask setup`"),
    }
    // bpf-linker's default (`--bpf-expand-memcpy-in-order`) leaves every memset, even of five
    // bytes, as a call to a byte loop in a subprogram. Kernels before 6.4 cannot track
    // precision across such calls and give up pruning: `tracer oom` then exceeded the
    // verifier's million instructions on 6.1. LLVM's own expansion inlines them; without the
    // exported builtins a copy it cannot expand fails the build instead of costing a call.
    println!("cargo:rustc-link-arg=--disable-expand-memcpy-in-order");
    println!("cargo:rustc-link-arg=--disable-memory-builtins");
    // The architecture the programs read registers and system calls of: tracer's (build.rs
    // passes it), else this machine's, for cargo check and clippy.
    if let Err(err) = aya_build::emit_bpf_target_arch_cfg() {
        println!("cargo:warning=bpf_target_arch: {err}");
    }
}
