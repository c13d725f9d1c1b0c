//! The `chime-gateway` binary; everything lives in the library.

use libmimalloc_sys::{mi_option_set, mi_option_t};

/// mimalloc instead of glibc's malloc: the request path allocates small,
/// short-lived objects on two worker threads, where glibc's arena locks and
/// consolidation showed up in profiles (README, "Performance").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (its position in `mi_option_e` of the
/// bundled mimalloc 3; the binding names no constant for it).
const PURGE_DELAY: mi_option_t = 15;

/// Makes mimalloc give memory it no longer uses back to the system within
/// 10 ms instead of a second.
///
/// mimalloc purges only when the thread that freed the memory next calls
/// into the allocator after the delay; with a second's delay a worker that
/// goes quiet after a burst (10,000 connections parking) never gets there,
/// and kept about 180 MiB resident instead of 50 MiB. Purging at once (0)
/// called `madvise` after about 7% of requests under load (`strace -c`) and
/// cost roughly a tenth more CPU per request than the default; 10 ms keeps
/// the memory figure with a third of those calls (README, "Performance").
/// mimalloc's own `MIMALLOC_PURGE_DELAY`, when set, still wins, so the
/// choice can be measured again with any load.
#[allow(unsafe_code)]
fn return_freed_memory_promptly() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return;
    }
    // SAFETY: plain option setter of the allocator, called before any
    // other thread exists (the options are not synchronised).
    unsafe { mi_option_set(PURGE_DELAY, 10) }
}

fn main() -> std::process::ExitCode {
    return_freed_memory_promptly();
    chime_gateway::cli::main()
}

#[cfg(test)]
mod tests {
    use super::*;
    use libmimalloc_sys::mi_option_get;

    #[test]
    #[allow(unsafe_code)]
    fn purge_delay_names_mimallocs_option() {
        // SAFETY: reads an option; tests set none.
        let default = unsafe { mi_option_get(PURGE_DELAY) };
        assert_eq!(
            default, 1000,
            "option {PURGE_DELAY} is not the purge delay (1000 ms)"
        );
    }
}
