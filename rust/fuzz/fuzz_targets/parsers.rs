//! libFuzzer entry point: every input goes through [`tokenloom_fuzz::check`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tokenloom_fuzz::check(data));
