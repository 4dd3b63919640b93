use which::which;

/// The build links with `bpf-linker`, a dependency cargo cannot see: rebuild when it changes.
fn main() {
    match which("bpf-linker") {
        Ok(linker) => println!("cargo:rerun-if-changed={}", linker.display()),
        Err(_) => println!("cargo:warning=bpf-linker is not installed: run `cargo xtask setup`"),
    }
}
