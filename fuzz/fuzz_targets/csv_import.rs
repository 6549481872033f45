//! A CSV file handed to `clinicd import patients` (from another system, so untrusted): every row
//! gets an answer, and no problem quotes a cell (cells are PHI; the report is a log).
//! Twin: crates/clinicd/src/import.rs, `any_bytes_give_an_answer_per_row_and_no_cell_in_a_problem`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let today = chrono::NaiveDate::from_ymd_opt(2026, 12, 4).unwrap_or_default();
    for outcome in clinicd_clinicd::import::judge_rows(bytes, today) {
        if let Err(problem) = outcome {
            assert!(!problem.is_empty());
        }
    }
});
