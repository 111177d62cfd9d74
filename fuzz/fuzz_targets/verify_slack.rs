//! `inlet_shared::signature::fuzzing::verify_slack` under libFuzzer; the oracle is documented there.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| inlet_shared::signature::fuzzing::verify_slack(data));
