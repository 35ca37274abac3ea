//! Plinth's workflows: deterministic code only (no I/O, clocks or randomness).
//!
//! Workflows call activities by name through the contracts in [`contracts`]; the
//! implementations live in `plinth-activities`, so no backend is linked into workflow code.

mod canary;
pub mod contracts;

pub use canary::Canary;
