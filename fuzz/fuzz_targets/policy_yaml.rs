//! Policy file text → parse → validate → (accepted) round trips, snapshot,
//! effective policy and compiled route tables.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(src) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(docs) = levee_proto::policy::parse_documents(src) {
        levee_fuzz::policy::accepted(&docs);
    }
});
