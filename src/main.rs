//! The `chime-gateway` binary; everything lives in the library.

/// mimalloc instead of glibc's malloc: the request path allocates small,
/// short-lived objects on two worker threads, where glibc's arena locks and
/// consolidation showed up in profiles (README, "Performance").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    chime_gateway::cli::main()
}
