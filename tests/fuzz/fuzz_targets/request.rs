//! A request target and options: see `chime_gateway::fuzz::request`.
#![no_main]

// Whether the input was accepted does not matter here: refusals are explored too.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    chime_gateway::fuzz::request(data);
});
