fn main() -> std::process::ExitCode {
    socle::cli::main()
}
