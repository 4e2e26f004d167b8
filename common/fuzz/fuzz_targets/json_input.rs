//! `input::parse_json`, the defensive reader under every operator file and every report
//! section an agent sends.
//!
//! Accepted: the bytes were UTF-8 within the size limit, the value nests at most `MAX_DEPTH`
//! deep, every number is finite, plain `serde_json` reads the same value, and the value written
//! back out as JSON is accepted again and reads back equal. Refused: one line, and a document
//! plain `serde_json` accepts may only be refused for a repeated key, its nesting or its size.

#![no_main]

use fleetgate_common::input::{self, MAX_DEPTH, MAX_INPUT_BYTES};
use fleetgate_fuzz::{assert_one_line, depth, numbers_are_finite};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|bytes: &[u8]| {
    let plain = serde_json::from_slice::<Value>(bytes);
    match input::parse_json(bytes) {
        Ok(value) => {
            assert!(bytes.len() as u64 <= MAX_INPUT_BYTES);
            assert!(
                std::str::from_utf8(bytes).is_ok(),
                "accepted bytes that are not UTF-8"
            );
            assert!(
                depth(&value) <= MAX_DEPTH,
                "accepted nesting {}",
                depth(&value)
            );
            assert!(
                numbers_are_finite(&value),
                "accepted a non-finite number: {value}"
            );
            match plain {
                Ok(plain) => assert_eq!(plain, value, "serde_json reads another value"),
                Err(e) => panic!("accepted what serde_json refuses ({e}): {value}"),
            }
            let text = serde_json::to_vec(&value).expect("an accepted value serializes");
            if text.len() as u64 <= MAX_INPUT_BYTES {
                match input::parse_json(&text) {
                    Ok(again) => assert_eq!(again, value, "written back, it reads another value"),
                    Err(e) => panic!(
                        "refused its own output ({e}): {}",
                        String::from_utf8_lossy(&text)
                    ),
                }
            }
        }
        Err(e) => {
            let e = e.to_string();
            assert_one_line("parse_json", &e);
            if let Ok(plain) = plain {
                let allowed = e.starts_with("invalid JSON: key '")
                    || e.starts_with("nested deeper than")
                    || e.starts_with("larger than");
                assert!(allowed, "refused valid JSON: {e}");
                if e.starts_with("nested deeper than") {
                    assert!(
                        depth(&plain) > MAX_DEPTH,
                        "refused nesting {}: {e}",
                        depth(&plain)
                    );
                }
            }
        }
    }
});
