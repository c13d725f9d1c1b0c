//! The `chime-gateway` binary; everything lives in the library.

fn main() -> std::process::ExitCode {
    chime_gateway::cli::main()
}
