//! The `socle` command. The library does the work; `cli` translates.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
