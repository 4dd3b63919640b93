fn main() -> std::process::ExitCode {
    tracer::main()
}
