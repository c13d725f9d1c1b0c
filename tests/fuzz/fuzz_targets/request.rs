//! A request target and options: see `chime_gateway::fuzz::request`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| chime_gateway::fuzz::request(data));
