//! `inlet_shared::signature::fuzzing::verify_stripe` under libFuzzer; the oracle is documented there.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| inlet_shared::signature::fuzzing::verify_stripe(data));
