//! `inlet_shared::signature::fuzzing::parse_headers` under libFuzzer; the oracle is documented there.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| inlet_shared::signature::fuzzing::parse_headers(data));
