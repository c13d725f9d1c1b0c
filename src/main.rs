//! The `chime-gateway` binary: its memory allocator; everything else lives
//! in the library.

mod allocator;

#[global_allocator]
static ALLOCATOR: allocator::Mimalloc = allocator::Mimalloc;

fn main() -> std::process::ExitCode {
    allocator::return_freed_memory_promptly();
    chime_gateway::workers::set_housekeeping(allocator::collect_freed_memory);
    chime_gateway::cli::main()
}
